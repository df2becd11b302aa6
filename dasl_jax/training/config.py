"""The default training configuration: every hyper-parameter of a run, as a ConfigDict.

``python -m experiments.train --flagfile=experiments/configs/tiny.flags`` starts
from :func:`default_config` and a flagfile overrides fields
(``--config.optim.lr=0.01``). Sections: ``model`` (regressor), ``critic``,
``loss`` (weights and switches), ``optim``, ``train`` (steps, logging,
checkpoints, devices), ``eval`` and ``data`` (the data side's own flags,
``dasl_jax.data.config.data_config()``; batch sizes live there).
"""
from __future__ import annotations

import ml_collections


def _data_config():
  try:
    from dasl_jax.data.config import data_config
  except ImportError:  # the data package is optional for the model/loss tests
    c = ml_collections.ConfigDict()
    c.batch_size_3d = 8
    c.batch_size_wild = 8
    c.convention = 'v1'
    return c
  return data_config()


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # --- regressor (mirrors dasl_jax.models.ModelConfig; convention comes from data)
  c.model = ml_collections.ConfigDict()
  c.model.arch = 'mobilenet'        # mobilenet | resnet
  c.model.width = 0.5               # MobileNetV1 widen factor
  c.model.depth = 50                # ResNet depth: 18 | 34 | 50
  c.model.resnet_width = 64         # ResNet stem width (64 = paper)
  c.model.in_channels = 4           # 3 colour, 4 colour + FLM
  c.model.depthwise = 'auto'        # MobileNet depthwise: auto | shifted | grouped
  # Activations: float32 | bfloat16 (mixed precision for GPUs/TPUs: parameters, batch-norm
  # statistics and the losses stay float32; on XLA:CPU bfloat16 is slower, a correctness check).
  c.model.compute_dtype = 'float32'
  c.model.freeze_bn = False         # True: batch norm in inference mode, statistics frozen
  c.model.init_checkpoint = ''      # model work dir (experiments.convert_checkpoint) to start from

  # --- self-critic (paper: latent 512, MLP 1024 -> 1024 -> 1)
  c.critic = ml_collections.ConfigDict()
  # The paper gives only the 512-d latent; four stride-2 3x3 convs this narrow cost
  # ~14M multiply-adds per 120x120 crop (widths 32..256 would cost ~55M, more than
  # MobileNet x0.5 itself, and the critic sees every crop of the step twice).
  c.critic.encoder_widths = (16, 32, 64, 128)
  c.critic.latent_dim = 512
  c.critic.hidden = (1024, 1024)

  # --- losses: L = w_3d L_3d + w_2d L_2d_con + w_3d_con L_3d_con + w_cyc L_cyc + w_sc L_sc
  c.loss = ml_collections.ConfigDict()
  c.loss.use_3d = True
  c.loss.use_2d = True
  c.loss.use_3d_con = True
  c.loss.use_cyc = True
  c.loss.use_sc = True              # generator side of the self-critic
  c.loss.train_critic = True        # critic side (needs use_sc to matter)
  # Defaults follow the authors' released script (10 L3d + 0.05 Lsc +
  # 0.005 (L2d + Lcyc)), plus an L_3d_con weight of the same order as L_cyc's
  # (both are squared pixel distances); see experiments/configs/2dasl_300wlp.flags.
  c.loss.w_3d = 10.0
  c.loss.w_2d = 0.005
  c.loss.w_3d_con = 0.005
  c.loss.w_cyc = 0.005
  c.loss.w_sc = 0.05
  c.loss.l3d_kind = 'wpdc'          # wpdc | vdc (dense-model vertex distance) | mse
  c.loss.wpdc_resample = 132        # random vertices per step besides the 68 landmarks
  c.loss.weight_power = 2           # SEL18 weights squared (released code) or 1 (paper text)
  # FLM input jitter: detector-like Gaussian errors on the 18 points the 4th channel draws,
  # as a mean point error over the 68-point face size (FAN on AFLW2000-3D: ~0.058); 0 = off.
  # The 2D targets of the wild terms are never jittered.
  c.loss.flm_jitter = 0.0
  # Critic negatives that only the pairing gives away: 3D images with another example's label.
  c.loss.critic_mismatch = False
  # L_2d_con / L_cyc: > 0 = pseudo-Huber scale in crop pixels (a mislabelled point pulls
  # with a bounded force); 0 = squared error (the paper).
  c.loss.robust_2d = 0.0
  # Per-point weights of L_2d_con / L_cyc: sel18 (2DASL's, to weight_power) or noise
  # (inverse to each point's label disagreement left after fitting the wild scheme,
  # same mean; needs --config.data.wild_scheme=fit or a fitted scheme file).
  c.loss.point_weights = 'sel18'

  # --- optimisers
  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'sgd'              # sgd (Nesterov) | adam | adamw
  c.optim.lr = 0.004
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4       # sgd: L2 added to the gradient (PyTorch); adamw: decoupled
  c.optim.decay_to = 0.001          # exponential decay to lr * decay_to at the last step
  c.optim.warmup_steps = 0          # linear warm-up from 0
  c.optim.clip_norm = 0.0           # > 0: clip gradients by global norm
  # Adam's denominator floor: with 1e-8 every weight moves ~lr per step whatever its
  # gradient, noise included; a floor near the gradients' scale makes tiny-gradient
  # weights move little (as SGD would).
  c.optim.adam_eps = 1e-8
  c.optim.critic_name = 'adam'
  c.optim.critic_lr = 1e-4
  c.optim.critic_b1 = 0.5           # GAN-usual Adam beta1
  c.optim.critic_every = 1          # critic update every k steps

  # --- the run
  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.train.seed = 0
  c.train.log_every = 50
  c.train.eval_every = 500          # held-out NME every N steps (0 = only at the end)
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3      # last k, plus the best by held-out NME
  c.train.eval_batch = 64
  c.train.fake_data = False         # tiny in-memory random data (tests, no data package)
  c.train.fake_nan_batch = -1       # fake data only: a NaN label in this 3D batch (tests the NaN stop)
  c.train.distributed = False       # call jax.distributed.initialize() (multi-process / multi-host)
  # Several processes (training/distributed.py): unset ('' / -1) = $JAX_COORDINATOR_ADDRESS,
  # $JAX_NUM_PROCESSES, $JAX_PROCESS_ID, else JAX's cluster detection (SLURM, MPI, TPU).
  c.train.coordinator_address = ''  # host:port of process 0
  c.train.num_processes = -1
  c.train.process_id = -1
  c.train.progress = True           # tqdm bar
  # > 0: exponential moving average of the weights (decay per step); evaluation and the
  # checkpoints' `variables` use the average.
  c.train.ema_decay = 0.0
  # Validation (config.data.validation): FLM passes of the self-bootstrapped landmark map
  # (4-channel models; the held-out crops have no detector landmarks).
  c.train.val_bootstrap_iters = 2
  # What ranks checkpoints (the kept "best" one and selection.json): auto = val21_scheme_nme
  # with a fitted wild scheme, else val21_nme with a validation split, else heldout_nme;
  # or one of val21_nme, val21_scheme_nme, val_teacher_nme, heldout_nme. Never a test set.
  c.train.select_metric = 'auto'
  # Test-time averaging of the held-out, validation and AFLW2000-3D evaluation: 'none', or
  # 'flip' (each crop with its mirror image, averaged back: inference.core).
  c.train.eval_tta = 'none'

  # --- evaluation besides the held-out set
  c.eval = ml_collections.ConfigDict()
  c.eval.aflw2000_dir = ''          # AFLW2000-3D folder: NME at the end (and at eval steps)

  c.data = _data_config()
  return c


def get_config():
  return default_config()


# ----------------------------------------------------------------------------
# Checks: every value outside its range is one line naming its flag.

_POS, _NONNEG = 'a positive number', 'a number >= 0'
# flag (under --config.) -> (test, what it must be)
RULES = {
    'model.width': (lambda v: v > 0, _POS),
    'model.in_channels': (lambda v: v in (3, 4), '3 or 4'),
    'model.depth': (lambda v: v in (18, 34, 50), '18, 34 or 50'),
    'model.resnet_width': (lambda v: v >= 1, 'a positive integer'),
    'model.depthwise': (lambda v: v in ('auto', 'shifted', 'grouped'), 'auto, shifted or grouped'),
    'model.compute_dtype': (lambda v: v in ('float32', 'bfloat16'), 'float32 or bfloat16'),
    'critic.latent_dim': (lambda v: v >= 1, 'a positive integer'),
    'loss.w_3d': (lambda v: v >= 0, _NONNEG), 'loss.w_2d': (lambda v: v >= 0, _NONNEG),
    'loss.w_3d_con': (lambda v: v >= 0, _NONNEG), 'loss.w_cyc': (lambda v: v >= 0, _NONNEG),
    'loss.w_sc': (lambda v: v >= 0, _NONNEG),
    'loss.l3d_kind': (lambda v: v in ('wpdc', 'vdc', 'mse'), 'wpdc, vdc or mse'),
    'loss.wpdc_resample': (lambda v: v >= 0, 'an integer >= 0'),
    'loss.weight_power': (lambda v: v in (1, 2), '1 or 2'),
    'loss.flm_jitter': (lambda v: v >= 0, _NONNEG),
    'loss.robust_2d': (lambda v: v >= 0, '>= 0 (pixels; 0 = squared error)'),
    'loss.point_weights': (lambda v: v in ('sel18', 'noise'), 'sel18 or noise'),
    'train.select_metric': (lambda v: v in ('auto', 'val21_nme', 'val21_scheme_nme',
                                            'val_teacher_nme', 'heldout_nme'),
                            'auto, val21_nme, val21_scheme_nme, val_teacher_nme or heldout_nme'),
    'optim.name': (lambda v: v in ('sgd', 'adam', 'adamw'), 'sgd, adam or adamw'),
    'optim.lr': (lambda v: v > 0, _POS),
    'optim.momentum': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'optim.weight_decay': (lambda v: v >= 0, _NONNEG),
    'optim.decay_to': (lambda v: 0 < v <= 1, 'in (0, 1] (1 = constant learning rate)'),
    'optim.warmup_steps': (lambda v: v >= 0, 'an integer >= 0'),
    'optim.clip_norm': (lambda v: v >= 0, '>= 0 (0 = no clipping)'),
    'optim.adam_eps': (lambda v: v > 0, _POS),
    'optim.critic_lr': (lambda v: v > 0, _POS),
    'optim.critic_b1': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'optim.critic_every': (lambda v: v >= 1, 'an integer >= 1'),
    'train.num_steps': (lambda v: v >= 1, 'an integer >= 1'),
    'train.log_every': (lambda v: v >= 0, 'an integer >= 0 (0 = only at the end)'),
    'train.eval_every': (lambda v: v >= 0, 'an integer >= 0 (0 = only at the end)'),
    'train.checkpoint_every': (lambda v: v >= 0, 'an integer >= 0 (0 = only at the end)'),
    'train.keep_checkpoints': (lambda v: v >= 1, 'an integer >= 1'),
    'train.eval_batch': (lambda v: v >= 1, 'an integer >= 1'),
    'train.ema_decay': (lambda v: 0 <= v < 1, 'in [0, 1) (0 = no average)'),
    'train.val_bootstrap_iters': (lambda v: v >= 1, 'an integer >= 1'),
    'train.eval_tta': (lambda v: v in ('none', 'flip'), 'none or flip'),
    'data.batch_size_3d': (lambda v: v >= 1, 'an integer >= 1'),
    'data.batch_size_wild': (lambda v: v >= 1, 'an integer >= 1'),
    'data.num_threads': (lambda v: v >= 1, 'an integer >= 1'),
    'data.prefetch': (lambda v: v >= 1, 'an integer >= 1'),
    'data.num_workers': (lambda v: v >= 0, 'an integer >= 0'),
    'data.opencv_threads': (lambda v: v >= -1, 'an integer >= -1 (-1: OpenCV\'s default pool)'),
    'data.worker_buffer': (lambda v: v >= 1, 'an integer >= 1'),
    'data.val_size': (lambda v: v >= 0, 'an integer >= 0'),
    'data.synthetic_size_3d': (lambda v: v >= 1, 'an integer >= 1'),
    'data.synthetic_size_wild': (lambda v: v >= 1, 'an integer >= 1'),
    'data.synthetic_size_heldout': (lambda v: v >= 1, 'an integer >= 1'),
    'data.heldout_size': (lambda v: v >= 0, 'an integer >= 0 (0 = all)'),
    'data.landmark_tolerance': (lambda v: v >= 0, _NONNEG),
}


def _get(config, path):
  node = config
  for part in path.split('.'):
    if part not in node:
      return None
    node = node[part]
  return node


def check_config(config):
  """Raise ``DaslError`` naming the first ``--config.*`` value outside its range."""
  from dasl_jax.errors import DaslError
  for path, (ok, what) in RULES.items():
    v = _get(config, path)
    if v is None:
      continue
    try:
      good = bool(ok(v))
    except TypeError:
      good = False
    if not good:
      raise DaslError(f'--config.{path}={v!r}: must be {what}')


def suggest_field(config, path: str) -> str:
  """' (did you mean --config.X?)' for a misspelled field, or ''.

  Looks through every field of the config for the closest name (so
  ``optim.learning_rate`` finds ``optim.lr`` through a table of common aliases,
  and ``data.batch_size`` finds ``data.batch_size_3d``).
  """
  import difflib
  aliases = {'learning_rate': 'lr', 'steps': 'num_steps', 'batch_size': 'batch_size_3d',
             'seed': 'seed', 'wd': 'weight_decay', 'epochs': 'num_steps'}
  fields = []

  def walk(node, prefix):
    for k in node.keys():
      v = node[k]
      full = f'{prefix}{k}'
      if isinstance(v, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        walk(v, full + '.')
      else:
        fields.append(full)

  walk(config, '')
  leaf = path.split('.')[-1]
  section = path.rsplit('.', 1)[0] + '.' if '.' in path else ''
  if leaf in aliases:
    cand = [f for f in fields if f.split('.')[-1] == aliases[leaf]]
    same = [f for f in cand if f.startswith(section)]
    if same or cand:
      return f' (did you mean --config.{(same or cand)[0]}?)'
  close = difflib.get_close_matches(path, fields, n=1, cutoff=0.6)
  if not close:
    close = [f for f in fields if f.split('.')[-1] in
             difflib.get_close_matches(leaf, [g.split('.')[-1] for g in fields], n=1, cutoff=0.7)]
  return f' (did you mean --config.{close[0]}?)' if close else ''


def config_flags_in(argv):
  """``--config.PATH`` names given on the command line or in its flagfiles."""
  from pathlib import Path
  out = []
  for a in argv:
    if a.startswith('--flagfile='):
      p = Path(a.split('=', 1)[1])
      if p.exists():
        lines = [s.strip() for s in p.read_text().splitlines()]
        out += config_flags_in([s for s in lines if s and not s.startswith('#')])
    elif a.startswith('--config.'):
      out.append(a[len('--config.'):].split('=', 1)[0])
  return out


def unknown_field_message(argv) -> str:
  """One line for the first unknown ``--config.*`` field, with a suggestion; '' if none."""
  config = default_config()
  for path in config_flags_in(argv):
    if _get(config, path) is None and not _is_section(config, path):
      return f'--config.{path}: no such field{suggest_field(config, path)}'
  return ''


def _is_section(config, path):
  node = config
  for part in path.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False
    node = node[part]
  return True


def config_from_args(args, base=None) -> ml_collections.ConfigDict:
  """The config ``python -m experiments.train`` builds from ``args`` (``--flagfile=F``
  and ``--config.PATH=VALUE`` items), parsed by the same ml_collections/absl flag
  machinery, for code that needs a run's config without being that command
  (benchmarks, notebooks). A bad field or value raises one-line DaslError.

  ml_collections registers the ``--config.*`` override flags from ``sys.argv`` when
  the config flag is defined, so ``sys.argv`` is set to ``args`` for that moment.
  """
  import sys
  from absl import flags
  from ml_collections import config_flags
  from dasl_jax.errors import DaslError
  args = [str(a) for a in args]
  bad = unknown_field_message(args)
  if bad:
    raise DaslError(bad)
  fv = flags.FlagValues()
  argv = ['config_from_args', *args]
  saved = sys.argv
  try:
    sys.argv = argv
    config_flags.DEFINE_config_dict('config', base if base is not None else default_config(),
                                    flag_values=fv)
    sys.argv = saved
    fv(argv)
  except flags.Error as e:
    raise DaslError(str(e).replace('ERROR:: ', '')) from None
  finally:
    sys.argv = saved
  return fv.config
