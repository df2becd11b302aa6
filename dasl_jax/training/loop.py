"""``train_and_evaluate(config, workdir)``: build everything, resume, train, evaluate, save."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from dasl_jax import assets
from dasl_jax.geometry import camera
from dasl_jax.io import checkpoint
from dasl_jax.io.files import write_text_atomic
from dasl_jax.geometry import params as P
from dasl_jax.inference import core
from dasl_jax.training.config import check_config
from dasl_jax.errors import DaslError
from dasl_jax.models import ModelConfig, create_regressor
from dasl_jax.models.critic import SelfCritic
from dasl_jax.training import optimizers
from dasl_jax.training import state as state_lib
from dasl_jax.training import step as step_lib
from dasl_jax.training.checkpointing import TrainCheckpointer
from dasl_jax.training.logging import MetricLogger


def model_config_from(config) -> ModelConfig:
  m = config.model
  return ModelConfig.from_dict(dict(
      arch=m.arch, width=float(m.width), depth=int(m.depth), in_channels=int(m.in_channels),
      num_params=62, convention=str(config.data.convention), depthwise=m.depthwise,
      resnet_width=int(m.resnet_width), compute_dtype=str(m.get('compute_dtype', 'float32'))),
      'config.model')


def build_data(config):
  """The data object: fake in-memory data, or the data package's ``build_data``."""
  if config.train.fake_data:
    from dasl_jax.training.fake_data import FakeData
    return FakeData(seed=config.train.seed, batch_3d=config.data.batch_size_3d,
                    batch_wild=config.data.batch_size_wild,
                    convention=config.data.convention, nan_batch=config.train.fake_nan_batch)
  try:
    from dasl_jax.data import build_data as build
  except ImportError as e:
    raise DaslError(f'the data package is not available ({e}); use '
                    '--config.train.fake_data=True for a smoke run') from None
  return build(config.data, config.train.seed)


def nme_percent(pred68, gt68):
  """NME in percent: mean point L2 error / sqrt(area of the GT 68-point box), mean over images.

  Args:
    pred68, gt68: (N, 68, 2) in the same pixel frame.
  Returns:
    float.
  """
  gt68 = np.asarray(gt68, np.float64)
  wh = gt68.max(axis=1) - gt68.min(axis=1)
  norm = np.sqrt(wh[:, 0] * wh[:, 1])
  err = np.linalg.norm(np.asarray(pred68, np.float64) - gt68, axis=-1).mean(axis=1)
  return float(np.mean(err / norm) * 100.0)


class Evaluator:
  """The prediction core (``predict_batch``) bound to a run's network and constants.

  ``heldout(variables, heldout)`` and ``validation(variables, val)`` give the
  run's held-out metrics; the FLM of a 4-channel model comes from the held-out
  set's ``points18`` (synthetic held-out set) or is self-bootstrapped
  (``bootstrap_iters`` passes; validation crops have no detector landmarks).
  ``tta``: test-time averaging ('none' or 'flip', ``core.mirror_fit``).
  """

  def __init__(self, module, in_channels, convention, stats, lm_model, batch_size,
               bootstrap_iters=2, scheme21=None, tta='none'):
    self.consts = (stats, lm_model)
    self.convention = convention
    self.scheme21 = scheme21  # the wild labels' 21-point scheme, or None
    self.batch_size = int(batch_size)
    flip = core.mirror_fit(tta, stats, lm_model, convention)
    self.given = core.make_forward(module, in_channels, convention, 0, flip)
    self.boot = (core.make_forward(module, in_channels, convention, max(int(bootstrap_iters), 1),
                                   flip)
                 if in_channels == 4 else self.given)

  def _predict(self, fn, variables, data, points=True):
    n = len(data['image'])
    return core.predict_crops(fn, variables, *self.consts, data['image'], n,
                              data.get('points18') if points else None,
                              data.get('mask18') if points else None, self.batch_size)

  def _lms(self, fn, variables, data, points=True):
    return self._predict(fn, variables, data, points)['lms68']

  def heldout(self, variables, heldout):
    """Held-out NME (%) of the 68 crop landmarks (image, points18, mask18, lms68)."""
    return nme_percent(self._lms(self.given, variables, heldout), heldout['lms68'])

  def validation(self, variables, val):
    """Validation metrics on held-out crops (``DataBundle.validation``).

    Returns:
      dict ``val21_nme``: AFLW 21-point NME (%, invisible points masked, normalised by
      the visible points' box, plain mean over crops) against the hand labels; and
      with teacher labels ``val_teacher_nme``: 68-point NME (%) against the teacher's
      landmarks (how far the student left the 3D side's labels); with the wild labels'
      scheme ``val21_scheme_nme``: the same 21-point NME with the prediction's points
      placed by AFLW's definitions (``face_model.schemes``): what is left of the
      disagreement once the labelling style is taken out.
    """
    from dasl_jax import evaluation
    from dasl_jax.face_model import schemes
    out = self._predict(self.boot, variables, val, points=False)
    lms = out['lms68']
    gt21 = np.where(val['vis21'][..., None] > 0, val['pts21'], -1)
    summary, _ = evaluation.aflw21_nme(lms, gt21, val['yaws'], val['vis21'] > 0)
    res = {'val21_nme': summary['mean'], 'val21_mean_of_bins': summary['mean_of_bins']}
    if self.scheme21 is not None:
      pts21 = np.asarray(schemes.points2d_from_params(out['params'], self.consts[1],
                                                      self.scheme21, self.convention))
      per = evaluation.nme(pts21, np.asarray(gt21, np.float64), val['vis21'] > 0)
      res['val21_scheme_nme'] = float(np.mean(per) * 100.0)
    if 'teacher_lms68' in val:
      res['val_teacher_nme'] = nme_percent(lms, val['teacher_lms68'])
    return res


def selection_metric(choice, has_heldout, has_validation, has_scheme, has_teacher):
  """The logged metric that ranks checkpoints (``--config.train.select_metric``).

  ``auto``: the validation 21-point NME through the wild labels' scheme when there is
  one (style-free), else the plain validation NME, else the held-out NME. Never a
  benchmark's test set.
  """
  if choice == 'auto':
    if has_validation:
      return 'val21_scheme_nme' if has_scheme else 'val21_nme'
    return 'heldout_nme'
  need = {'heldout_nme': (has_heldout, 'a held-out set (--config.data.heldout)'),
          'val21_nme': (has_validation, 'a validation split (--config.data.validation)'),
          'val21_scheme_nme': (has_validation and has_scheme,
                               'a validation split and a wild scheme (--config.data.wild_scheme)'),
          'val_teacher_nme': (has_validation and has_teacher,
                              'a validation split and teacher labels (source_3d=teacher)')}
  ok, what = need[choice]
  if not ok:
    raise DaslError(f'--config.train.select_metric={choice} needs {what}')
  return choice


def describe_data(data) -> dict:
  """Rows of each training source and the evaluation sets (for epochs and reports)."""
  out = {}
  for key, name in (('3d', '3d_rows'), ('wild', 'wild_rows')):
    src = getattr(data, 'sources', {}).get(key)
    if src is not None:
      out[name] = len(src)
  for key in ('heldout', 'validation'):
    v = getattr(data, key, None)
    if v is not None:
      out[key] = len(v['image'])
  return out


def _iter_state(it):
  return it.get_state() if it is not None and hasattr(it, 'get_state') else {}


def get_data_state(data):
  """The loaders' position as JSON (both streams)."""
  if hasattr(data, 'streams') and hasattr(data.streams, 'get_state'):
    return _to_jsonable({'streams': data.streams.get_state()})
  return _to_jsonable({'train_3d': _iter_state(data.train_3d),
                       'train_wild': _iter_state(data.train_wild)})


def set_data_state(data, state):
  """Inverse of :func:`get_data_state`."""
  if 'streams' in state:
    data.streams.set_state(state['streams'])
    return
  for name in ('train_3d', 'train_wild'):
    it = getattr(data, name)
    if name in state and it is not None and hasattr(it, 'set_state'):
      it.set_state(state[name])


def _to_jsonable(state):
  """Loader states may hold bytes or numpy scalars; make them JSON."""
  return json.loads(json.dumps(state, default=lambda o: o.decode('latin1') if isinstance(
      o, bytes) else (o.item() if hasattr(o, 'item') else str(o))))


@dataclasses.dataclass
class Run:
  """Everything a run is made of, built by :func:`setup`."""
  config: Any
  workdir: Path
  data: Any
  model_cfg: ModelConfig
  module: Any
  compiled: step_lib.CompiledStep
  state: state_lib.TrainState
  consts: dict
  base_key: Any
  evaluator: Evaluator
  has_wild: bool
  use_ema: bool = False


def _loss_config(config, has_wild):
  loss_cfg = ml_collections.ConfigDict(config.loss.to_dict())
  if not has_wild and step_lib.wild_path_on(loss_cfg):
    print('warning: no in-the-wild stream (--config.data.source_wild=none): L_2d_con, '
          'L_3d_con, L_cyc, L_sc and the critic are off', file=sys.stderr)
    for k in ('use_2d', 'use_3d_con', 'use_cyc', 'use_sc', 'train_critic'):
      loss_cfg[k] = False
  return ml_collections.FrozenConfigDict(loss_cfg)


def _flat(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def record_flags(workdir, config):
  """Write ``flags.json``; when it already holds other values (a resumed run with
  changed flags), warn with what changed and append the old flags to
  ``flags_history.jsonl`` (with the time and the step reached), so no run's
  settings are lost."""
  path = Path(workdir) / checkpoint.FLAGS
  new_text = config.to_json_best_effort(indent=1) + '\n'
  if path.exists():
    try:
      old = json.loads(path.read_text())
    except json.JSONDecodeError:
      old = None
    new = json.loads(new_text)
    if old is not None and old != new:
      a, b = _flat(old), _flat(new)
      changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
      shown = ', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in changed[:6])
      more = f' (+{len(changed) - 6} more)' if len(changed) > 6 else ''
      print(f'warning: {workdir} was started with other flags; resuming with {shown}{more}. '
            f'The previous flags are kept in flags_history.jsonl', file=sys.stderr)
      ckpts = Path(workdir) / checkpoint.CHECKPOINTS
      steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) \
          if ckpts.is_dir() else []
      with open(Path(workdir) / 'flags_history.jsonl', 'a') as f:
        f.write(json.dumps({'replaced_at': time.strftime('%Y-%m-%dT%H:%M:%S'),
                            'latest_step': steps[-1] if steps else None,
                            'changed': changed, 'flags': old}) + '\n')
  write_text_atomic(path, new_text)


@dataclasses.dataclass
class StepBundle:
  """What :func:`build_step` makes: the networks, optimisers and the compiled step."""
  model_cfg: ModelConfig
  module: Any
  critic: Any
  tx: Any
  critic_tx: Any
  compiled: step_lib.CompiledStep
  has_wild: bool


def build_step(config, data, module=None, mesh=None) -> StepBundle:
  """Networks, optimisers and the jitted 2DASL step (no state, no files).

  Args:
    data: anything with ``convention`` and (optionally) ``train_wild``.
    module: a regressor to use instead of ``config.model``'s (tests: a tiny one).
    mesh: device mesh of the step (default: all devices on 'data').
  """
  model_cfg = model_config_from(config)
  module = module if module is not None else create_regressor(model_cfg)
  critic = SelfCritic(tuple(config.critic.encoder_widths), int(config.critic.latent_dim),
                      tuple(config.critic.hidden))
  tx, schedule = optimizers.regressor_optimizer(config.optim, int(config.train.num_steps))
  critic_tx = optimizers.critic_optimizer(config.optim)
  has_wild = getattr(data, 'train_wild', None) is not None
  ctx = step_lib.StepContext(
      module=module, critic=critic, tx=tx, critic_tx=critic_tx, schedule=schedule,
      in_channels=model_cfg.in_channels, convention=str(data.convention),
      freeze_bn=bool(config.model.freeze_bn), loss=_loss_config(config, has_wild),
      critic_every=max(int(config.optim.critic_every), 1),
      ema_decay=float(config.train.ema_decay))
  return StepBundle(model_cfg, module, critic, tx, critic_tx,
                    step_lib.CompiledStep(ctx, mesh), has_wild)


def init_state(config, bundle: StepBundle, data):
  """The step-0 train state (from ``config.model.init_checkpoint`` when set), the
  step's constants and its base key, placed (replicated) for ``bundle.compiled``.

  Returns:
    (state, consts, base_key).
  """
  seed = int(config.train.seed)
  stats = data.param_stats
  image_shape = (camera.CROP_SIZE, camera.CROP_SIZE)
  variables = state_lib.init_variables(bundle.module, 2 * seed, image_shape,
                                       bundle.model_cfg.in_channels)
  if config.model.init_checkpoint:
    variables, restored = optimizers.load_init_variables(config.model.init_checkpoint, variables)
    if not (np.allclose(restored.param_stats.mean, stats.mean)
            and np.allclose(restored.param_stats.std, stats.std)):
      print(f'warning: {config.model.init_checkpoint} was trained with whitening '
            f'{restored.param_stats.source}, the data uses {stats.source}', file=sys.stderr)
  critic_params = state_lib.init_critic(bundle.critic, 2 * seed + 1, image_shape)
  compiled = bundle.compiled
  # One compiled function (found in the persistent compilation cache on a restart)
  # instead of one small eager computation per optimiser leaf: ~1 s less per start.
  state = compiled.put_replicated(jax.jit(
      lambda v, c: state_lib.create_train_state(v, c, bundle.tx, bundle.critic_tx))(
          variables, critic_params))
  consts = compiled.put_replicated(step_lib.make_consts(
      data.model, stats.mean, stats.std, getattr(data, 'dense_model', None),
      getattr(data, 'wild_scheme18', None), str(config.loss.point_weights),
      int(config.loss.weight_power)))
  base_key = compiled.put_replicated(jax.random.fold_in(jax.random.PRNGKey(seed), 2))
  return state, consts, base_key


def prepare_workdir(config, workdir, data, model_cfg: ModelConfig) -> Path:
  """Create the work directory and write flags.json (history kept on change),
  data.json, model_config.json and param_stats.json. Returns its absolute path."""
  workdir = Path(workdir).expanduser().resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:  # several processes share one work directory
    record_flags(workdir, config)
    write_text_atomic(workdir / 'data.json', json.dumps(describe_data(data)) + '\n')
    checkpoint.write_model_files(workdir, model_cfg, data.param_stats)
    scheme = getattr(data, 'wild_scheme', None) or getattr(data, 'wild_scheme18', None)
    if scheme is not None:  # the wild labels' definitions this run trained with
      scheme.save(workdir / 'scheme.json')
  return workdir


def setup(config, workdir, data=None) -> Run:
  """A whole run: data, :func:`build_step`, :func:`init_state`,
  :func:`prepare_workdir` and the held-out evaluator."""
  config = assets.expand_config(config)
  if config.train.distributed:
    from dasl_jax.training import distributed
    distributed.initialize(config.train)
  if data is None:
    print(f'preparing data (3D: {config.data.source_3d}, wild: {config.data.source_wild}, '
          f'held-out: {config.data.heldout})...', file=sys.stderr, flush=True)
    data = build_data(config)
  if str(data.convention) != str(config.data.convention):
    raise DaslError(f'data convention {data.convention} differs from '
                    f'--config.data.convention={config.data.convention}')
  print(f'building {config.model.arch} and the train step (the first step compiles it)...',
        file=sys.stderr, flush=True)
  bundle = build_step(config, data)
  workdir = prepare_workdir(config, workdir, data, bundle.model_cfg)
  state, consts, base_key = init_state(config, bundle, data)
  model_cfg = bundle.model_cfg
  # Several processes: each evaluates on its own devices, with host copies of the constants.
  ec = jax.device_get(consts) if jax.process_count() > 1 else consts
  evaluator = Evaluator(bundle.module, model_cfg.in_channels, model_cfg.convention,
                        P.ParamStats(ec['mean'], ec['std'], data.param_stats.source),
                        ec['model68'], config.train.eval_batch,
                        config.train.val_bootstrap_iters, getattr(data, 'wild_scheme', None),
                        config.train.eval_tta)
  return Run(config, workdir, data, model_cfg, bundle.module, bundle.compiled, state, consts,
             base_key, evaluator, bundle.has_wild, float(config.train.ema_decay) > 0)


class _NoLogger:
  """Processes other than 0 log nothing (process 0 writes log.jsonl)."""

  def write(self, step, scalars):
    pass

  def close(self):
    pass


class Terminated(Exception):
  """SIGTERM stopped the run at a step boundary (after ``step`` steps, saved in ``workdir``)."""

  def __init__(self, step, workdir):
    super().__init__(f'terminated (SIGTERM) after step {step} in {workdir}')
    self.step, self.workdir = step, workdir


class _SigtermFlag:
  """Context manager: while inside, SIGTERM only sets ``requested`` (main thread only;
  elsewhere Python cannot install handlers and this does nothing). The previous
  handler is put back on exit."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
    return False


def _stop_check(sigterm, start):
  """``stop(step) -> bool``: whether to stop at the step boundary where ``step``
  steps are done (called with ``start``, ``start + 1``, ... before each step).

  One process: the SIGTERM flag, read at no cost. Under ``jax.distributed``
  all processes must stop together, or the ones not signalled wait forever in
  the next step's collective. There ``jax.distributed.initialize`` has installed
  JAX's preemption notifier, which takes SIGTERM from Python's handler (so
  ``sigterm`` never fires) and tells the coordinator; every process then
  reports the last step id it passed to ``reached_preemption_sync_point`` and
  all agree on the next one after the largest. While that is being agreed the
  call blocks, so no process runs past the agreed boundary. The ids are step
  counts, as Orbax passes them from ``CheckpointManager.save``, which calls the
  same function (an id must mean the same boundary to both). Between signals
  the call is a lock and a comparison (no message), so every boundary is checked.

  Returns:
    (stop, early): ``early`` is True when the run must stop before its first step.
  """
  if not jax.distributed.is_initialized():
    return (lambda step: sigterm.requested), False
  from jax.experimental import multihost_utils
  if sigterm.requested:
    # SIGTERM came before jax.distributed.initialize, to Python's handler: send it
    # again, now to the preemption notifier, so that every process hears of it.
    os.kill(os.getpid(), signal.SIGTERM)
  try:
    # A notice that came before any process got here leaves every count at 0 and
    # agrees on id 1, which a run resumed past step 1 would never pass: ask for
    # it now. Then report `start` at once, so a later notice agrees on an id this
    # loop will pass.
    early = multihost_utils.reached_preemption_sync_point(1)
    early = multihost_utils.reached_preemption_sync_point(max(start, 1)) or early
  except RuntimeError:  # --jax_enable_preemption_service=False
    if jax.process_count() == 1:  # then Python's handler still gets SIGTERM
      return (lambda step: sigterm.requested), False
    print("warning: JAX's preemption service is off (jax_enable_preemption_service): "
          'SIGTERM will not stop the run at a step boundary', file=sys.stderr)
    return (lambda step: False), False
  return multihost_utils.reached_preemption_sync_point, early


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, data=None):
  """Train a 2DASL regressor in ``workdir`` (resuming from its latest checkpoint).

  Logs every ``log_every`` steps, evaluates the held-out set every
  ``eval_every`` steps and at the end, checkpoints every ``checkpoint_every``
  steps, at evaluation steps and at the end. A non-finite loss stops the run
  (DaslError naming the step and the term) without saving past it.
  SIGTERM (sent by cluster schedulers before a kill; handled when called from
  the main thread) stops the run at the next step boundary: the step reached is
  saved (if finite), the write waited for, one line printed to stderr, and
  :class:`Terminated` raised. The first step's compilation is not interruptible.
  With several processes, SIGTERM to any of them stops all of them at the same
  step boundary, where they save that step together (:func:`_stop_check`).
  Returns:
    dict of final metrics (``step``, ``heldout_nme`` when a held-out set exists).
  """
  with _SigtermFlag() as sigterm:
    return _train_and_evaluate(config, workdir, data, sigterm)


def _train_and_evaluate(config, workdir, data, sigterm):
  config = assets.expand_config(config)
  check_config(config)
  run = setup(config, workdir, data)
  tc, num_steps, data = config.train, int(config.train.num_steps), run.data
  heldout = getattr(data, 'heldout', None)
  ckpt = TrainCheckpointer(run.workdir, keep=tc.keep_checkpoints)
  state, start = run.state, 0
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state, saved_data_state, start = restored
    set_data_state(data, saved_data_state)
    print(f'resumed from {run.workdir / checkpoint.CHECKPOINTS / str(start)}', file=sys.stderr)
  logger = MetricLogger(run.workdir, config.to_dict()) if jax.process_index() == 0 \
      else _NoLogger()
  n_img = int(config.data.batch_size_3d) + int(config.data.batch_size_wild)

  def check_finite():
    bad = int(jax.device_get(state.bad_step))
    if bad >= 0:
      term = step_lib.LOSS_NAMES[int(jax.device_get(state.bad_term))]
      ckpt.wait()
      raise DaslError(f'non-finite loss {term} at step {bad}; training stopped, last good '
                      f'checkpoint kept: step {ckpt.latest_step()} in {run.workdir}')

  final = {'step': start}
  bar = tqdm(total=num_steps, initial=start, disable=not tc.progress, desc='train',
             dynamic_ncols=True)
  validation = getattr(data, 'validation', None)
  select = selection_metric(tc.select_metric, heldout is not None, validation is not None,
                            getattr(data, 'wild_scheme', None) is not None,
                            validation is not None and 'teacher_lms68' in validation)

  def evaluate(st):
    variables = st.eval_variables(run.use_ema)
    if jax.process_count() > 1:  # replicated: every process evaluates its own copy
      variables = jax.device_get(variables)
    rec = {}
    if heldout is not None:
      rec['heldout_nme'] = run.evaluator.heldout(variables, heldout)
    if validation is not None:
      rec.update(run.evaluator.validation(variables, validation))
    return rec

  if start == 0 and (heldout is not None or validation is not None):
    # The starting point of the held-out curve: "NME fell to x of its start". With a
    # validation split (fine-tuning a start model) step 0 is saved as a selection
    # candidate too, so "do not train" can win the selection.
    rec0 = evaluate(state)
    logger.write(0, rec0)
    final.update({f'{k}_start': v for k, v in rec0.items()})
    if validation is not None and ckpt.latest_step() is None:
      ckpt.save(0, state, get_data_state(data), rec0.get(select),
                variables=state.eval_variables(run.use_ema))
  t_last, step_last, saved_at = time.perf_counter(), start, start
  in_flight = None
  stop, early = _stop_check(sigterm, start)
  try:
    try:
      for step in range(start, num_steps):
        if stop(step) or (early and step == start):
          raise Terminated(final['step'], run.workdir)
        b3 = next(data.train_3d)
        bw = next(data.train_wild) if run.has_wild else b3  # unused without a wild stream
        state, metrics = run.compiled(state, b3, bw, run.base_key, run.consts)
        done = final['step'] = step + 1
        # Keep one step in flight: wait for the previous one, so the bar's rate and
        # ETA count finished steps (dispatch is asynchronous) while the host still
        # prepares the next batch during this step.
        if in_flight is not None:
          jax.block_until_ready(in_flight)
          bar.update(1)
        in_flight = metrics
        if done == num_steps:
          jax.block_until_ready(metrics)
          bar.update(1)
        last = done == num_steps
        record = {}
        if (tc.log_every and done % tc.log_every == 0) or last:
          m = jax.device_get(metrics)  # the only per-step device -> host transfer
          check_finite()
          now = time.perf_counter()
          record = {k: float(v) for k, v in m.items()}
          record['images_per_s'] = (done - step_last) * n_img / max(now - t_last, 1e-9)
          t_last, step_last = now, done
          bar.set_postfix({k: f'{record[k]:.4g}' for k in ('total', 'l3d', 'l2d_con', 'lcyc')
                           if k in record} | {'img/s': f'{record["images_per_s"]:.1f}'},
                          refresh=False)
        nme = None
        if ((heldout is not None or validation is not None)
            and ((tc.eval_every and done % tc.eval_every == 0) or last)):
          check_finite()
          rec = evaluate(state)
          final.update(rec)
          record.update(rec)
          nme = rec[select]
        if record:
          logger.write(done, record)
        # Evaluation steps are saved too, so the best-NME checkpoint can be kept.
        if (tc.checkpoint_every and done % tc.checkpoint_every == 0) or last or nme is not None:
          check_finite()
          ckpt.save(done, state, get_data_state(data), nme,
                    variables=state.eval_variables(run.use_ema))
          saved_at = done
    except KeyboardInterrupt:
      # Ctrl-C: keep what was trained (if it is finite), then stop as asked.
      if saved_at != final['step'] and int(jax.device_get(state.bad_step)) < 0:
        ckpt.save(final['step'], state, get_data_state(data),
                  variables=state.eval_variables(run.use_ema))
        print(f'interrupted: saved step {final["step"]}', file=sys.stderr)
      raise
    except Terminated:
      # Preemption: save the step reached (a non-finite state raises DaslError instead).
      if saved_at != final['step']:
        check_finite()
        ckpt.save(final['step'], state, get_data_state(data),
                  variables=state.eval_variables(run.use_ema))
      ckpt.wait()
      if ckpt.latest_step() is None:
        print('terminated (SIGTERM) before the first step: nothing to save; '
              'rerun the same command to start', file=sys.stderr)
      else:
        print(f'terminated (SIGTERM): saved step {final["step"]} in {run.workdir}; '
              'rerun the same command to resume', file=sys.stderr)
      raise
    if saved_at != final['step']:
      check_finite()
      ckpt.save(final['step'], state, get_data_state(data),
                variables=state.eval_variables(run.use_ema))
    ckpt.wait()
    final['selection'] = {'metric': select, 'best_step': ckpt.best_step()}
    if jax.process_index() == 0:
      write_text_atomic(run.workdir / 'selection.json',
                        json.dumps(final['selection']) + '\n')
    if config.eval.aflw2000_dir:
      final['aflw2000'] = evaluate_aflw2000(
          config.eval.aflw2000_dir, run.module,
          jax.device_get(state.eval_variables(run.use_ema)),
          data.param_stats, run.model_cfg, data.model, tc.eval_batch, tc.eval_tta)
      logger.write(final['step'], {f'aflw2000_{k}': v for k, v in final['aflw2000'].items()
                                   if isinstance(v, (int, float))})
  finally:
    bar.close()
    ckpt.close()
    logger.close()
    streams = getattr(data, 'streams', None)
    if streams is not None and hasattr(streams, 'close'):
      streams.close()
  return final


def evaluate_aflw2000(folder, module, variables, stats, model_cfg, landmark_model, batch_size=64,
                      tta='none'):
  """AFLW2000-3D 68-point NME (%) of the finished run (``protocols``' defaults:
  1,998 images with the detector FLM for 4-channel models, else all 2,000; ``tta``
  as ``inference.Predictor``).

  Returns:
    dict ``nme_mean_of_bins``, ``nme_mean``, ``nme_bins``, ``n`` (original ground truth).
  """
  from dasl_jax import inference
  from dasl_jax.evaluation import aflw2000
  from dasl_jax.evaluation import protocols
  ds = aflw2000.load(folder)
  predictor = inference.Predictor.from_parts(module, variables, model_cfg, stats,
                                             landmark_model, batch_size=batch_size, tta=tta)
  _, idx = protocols.aflw2000_indices(ds, None, model_cfg.in_channels, 'detector')
  res = protocols.score_aflw2000(ds, idx, protocols.predict_aflw2000(predictor, ds, idx),
                                 pose=False)['original']
  return {'nme_mean_of_bins': res['mean_of_bins'], 'nme_mean': res['mean'],
          'nme_bins': res['bins'], 'n': res['n']}
