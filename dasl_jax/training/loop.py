"""``train_and_evaluate(config, workdir)``: build everything, resume, then step -> log ->
evaluate -> save until the last step.

The parts, each usable alone (tests, benchmarks, notebooks): :func:`build_data`,
:func:`build_step` (networks, optimisers, the compiled step), :func:`init_state`,
:func:`prepare_workdir` and :func:`setup` (all of them). What is measured lives in
``evaluation.heldout``; the data is anything that implements ``data.protocol.TrainData``.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from dasl_jax import assets
from dasl_jax.data.protocol import TrainData
from dasl_jax.errors import DaslError, warn
from dasl_jax.evaluation.heldout import Evaluator, selection_metric
from dasl_jax.geometry import camera
from dasl_jax.geometry import params as P
from dasl_jax.io import checkpoint
from dasl_jax.io.files import write_text_atomic
from dasl_jax.models import ModelConfig, create_regressor
from dasl_jax.models.critic import SelfCritic
from dasl_jax.training import distributed, optimizers, preemption
from dasl_jax.training import state as state_lib
from dasl_jax.training import step as step_lib
from dasl_jax.training.checkpointing import TrainCheckpointer
from dasl_jax.training.config import MODEL_FLAGS, check_config
from dasl_jax.training.fake_data import FakeData
from dasl_jax.training.logging import MetricLogger, record_flags


def model_config_from(config) -> ModelConfig:
  """The regressor ``config.model`` describes (its ``ModelConfig`` fields) for the data's
  pixel convention."""
  return ModelConfig.from_dict(
      {**{k: config.model[k] for k in MODEL_FLAGS}, 'convention': str(config.data.convention)},
      'config.model')


def build_data(config) -> TrainData:
  """The data: fake in-memory data, or the data package's ``build_data``."""
  if config.train.fake_data:
    return FakeData(seed=config.train.seed, batch_3d=config.data.batch_size_3d,
                    batch_wild=config.data.batch_size_wild,
                    convention=config.data.convention, nan_batch=config.train.fake_nan_batch)
  # Loaded here: Grain, OpenCV and TFDS take seconds to import and fake data needs none.
  from dasl_jax.data import build_data as build
  return build(config.data, config.train.seed)


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


def _loss_config(config, has_wild):
  loss_cfg = ml_collections.ConfigDict(config.loss.to_dict())
  if not has_wild and step_lib.wild_path_on(loss_cfg):
    warn('no in-the-wild stream (--config.data.source_wild=none): L_2d_con, '
         'L_3d_con, L_cyc, L_sc and the critic are off')
    for k in ('use_2d', 'use_3d_con', 'use_cyc', 'use_sc', 'train_critic'):
      loss_cfg[k] = False
  return ml_collections.FrozenConfigDict(loss_cfg)


def build_step(config, data: TrainData, module=None, mesh=None) -> StepBundle:
  """Networks, optimisers and the jitted 2DASL step (no state, no files).

  Args:
    data: its ``convention`` and ``has_wild`` are read.
    module: a regressor to use instead of ``config.model``'s (tests: a tiny one).
    mesh: device mesh of the step (default: all devices on 'data').
  """
  model_cfg = model_config_from(config)
  module = module if module is not None else create_regressor(model_cfg)
  critic = SelfCritic(tuple(config.critic.encoder_widths), int(config.critic.latent_dim),
                      tuple(config.critic.hidden))
  tx, schedule = optimizers.regressor_optimizer(config.optim, int(config.train.num_steps))
  critic_tx = optimizers.critic_optimizer(config.optim)
  ctx = step_lib.StepContext(
      module=module, critic=critic, tx=tx, critic_tx=critic_tx, schedule=schedule,
      in_channels=model_cfg.in_channels, convention=str(data.convention),
      freeze_bn=bool(config.model.freeze_bn), loss=_loss_config(config, data.has_wild),
      critic_every=max(int(config.optim.critic_every), 1),
      ema_decay=float(config.train.ema_decay))
  return StepBundle(model_cfg, module, critic, tx, critic_tx,
                    step_lib.CompiledStep(ctx, mesh), data.has_wild)


# ModelConfig fields that a run may change from its init checkpoint's: the input
# channels (a colour model is widened, optimizers.adapt_variables), how the same
# function is computed (depthwise form, activation dtype), and the label convention.
_INIT_MAY_DIFFER = ('in_channels', 'depthwise', 'compute_dtype', 'convention')


def _check_init_model(path, saved: ModelConfig, wanted: ModelConfig):
  """DaslError when the init checkpoint's network computes another function than the
  config's (e.g. 2DASL's ``resnet_pool='avg7s2'`` against the default mean pooling:
  the same variables, so nothing else would notice)."""
  a, b = saved.relevant(), wanted.relevant()
  for k in sorted(set(a) | set(b)):
    if k not in _INIT_MAY_DIFFER and a.get(k) != b.get(k):
      raise DaslError(f'--config.model.init_checkpoint={path}: its network has {k}='
                      f'{a.get(k)!r}, the config {b.get(k)!r}; set --config.model.{k}='
                      f'{a.get(k)} to train that network')


def init_state(config, bundle: StepBundle, data: TrainData):
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
    _check_init_model(config.model.init_checkpoint, restored.model_config, bundle.model_cfg)
    if not (np.allclose(restored.param_stats.mean, stats.mean)
            and np.allclose(restored.param_stats.std, stats.std)):
      warn(f'{config.model.init_checkpoint} was trained with whitening '
           f'{restored.param_stats.source}, the data uses {stats.source}')
  critic_params = state_lib.init_critic(bundle.critic, 2 * seed + 1, image_shape)
  compiled = bundle.compiled
  # One compiled function (found in the persistent compilation cache on a restart)
  # instead of one small eager computation per optimiser leaf: ~1 s less per start.
  state = compiled.put_replicated(jax.jit(
      lambda v, c: state_lib.create_train_state(v, c, bundle.tx, bundle.critic_tx))(
          variables, critic_params))
  consts = compiled.put_replicated(step_lib.make_consts(
      data.model, stats.mean, stats.std, data.dense_model, data.wild_scheme18,
      str(config.loss.point_weights), int(config.loss.weight_power)))
  base_key = compiled.put_replicated(jax.random.fold_in(jax.random.PRNGKey(seed), 2))
  return state, consts, base_key


def prepare_workdir(config, workdir, data: TrainData, model_cfg: ModelConfig) -> Path:
  """Create the work directory and write flags.json (history kept on change),
  data.json (rows of the sources and evaluation sets), model_config.json,
  param_stats.json and, with a wild scheme, scheme.json. Returns its absolute path."""
  workdir = Path(workdir).expanduser().resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:  # several processes share one work directory
    record_flags(workdir, config)
    rows = dict(data.source_rows())
    for name, held in (('heldout', data.heldout), ('validation', data.validation)):
      if held is not None:
        rows[name] = len(held['image'])
    write_text_atomic(workdir / 'data.json', json.dumps(rows) + '\n')
    checkpoint.write_model_files(workdir, model_cfg, data.param_stats)
    scheme = data.wild_scheme or data.wild_scheme18
    if scheme is not None:  # the wild labels' definitions this run trained with
      scheme.save(workdir / 'scheme.json')
  return workdir


@dataclasses.dataclass
class Run:
  """Everything a run is made of, built by :func:`setup`."""
  config: Any
  workdir: Path
  data: TrainData
  model_cfg: ModelConfig
  module: Any
  compiled: step_lib.CompiledStep
  state: state_lib.TrainState
  consts: dict
  base_key: Any
  evaluator: Evaluator
  has_wild: bool
  use_ema: bool = False


def setup(config, workdir, data=None) -> Run:
  """A whole run: data, :func:`build_step`, :func:`init_state`,
  :func:`prepare_workdir` and the held-out evaluator."""
  config = assets.expand_config(config)
  if config.train.distributed:
    distributed.initialize(config.train)
  if data is None:
    print(f'preparing data (3D: {config.data.source_3d}, wild: {config.data.source_wild}, '
          f'held-out: {config.data.heldout})...', file=sys.stderr, flush=True)
    data = build_data(config)
  if str(data.convention) != str(config.data.convention):
    raise DaslError(f'data convention {data.convention} differs from '
                    f'--config.data.convention={config.data.convention}')
  model_cfg = model_config_from(config)  # a bad field fails before the line below
  print(f'building {model_cfg.arch} and the train step (the first step compiles it)...',
        file=sys.stderr, flush=True)
  bundle = build_step(config, data)
  workdir = prepare_workdir(config, workdir, data, model_cfg)
  state, consts, base_key = init_state(config, bundle, data)
  # Several processes: each evaluates on its own devices, with host copies of the constants.
  ec = jax.device_get(consts) if jax.process_count() > 1 else consts
  evaluator = Evaluator(bundle.module, model_cfg,
                        P.ParamStats(ec['mean'], ec['std'], data.param_stats.source),
                        ec['model68'], config.train.eval_batch,
                        config.train.val_bootstrap_iters, data.wild_scheme,
                        config.train.eval_tta)
  return Run(config, workdir, data, model_cfg, bundle.module, bundle.compiled, state, consts,
             base_key, evaluator, bundle.has_wild, float(config.train.ema_decay) > 0)


# ----------------------------------------------------------------------------
# The loop.


def due(every: int, step: int, last: bool) -> bool:
  """Whether ``step`` (steps done) is a step to act on: every ``every`` steps
  (0 = never) and at the last step."""
  return last or (every > 0 and step % every == 0)


@jax.jit
def _add(total, metrics):
  return jax.tree_util.tree_map(jnp.add, total, metrics)


class _Session:
  """One call of :func:`train_and_evaluate`: the state and the step it has reached,
  the checkpointer, the log, the progress bar and the log interval's metric sums."""

  def __init__(self, run: Run):
    self.run, self.tc = run, run.config.train
    self.ckpt = TrainCheckpointer(run.workdir, keep=self.tc.keep_checkpoints)
    self.state, self.step = run.state, 0
    restored = self.ckpt.restore_latest(self.state)
    if restored is not None:
      self.state, position, self.step = restored
      run.data.set_state(position)
      print(f'resumed from {run.workdir / checkpoint.CHECKPOINTS / str(self.step)}',
            file=sys.stderr)
    self.saved_at = self.step
    self.logger = MetricLogger(run.workdir, run.config.to_dict()) \
        if jax.process_index() == 0 else None
    self.bar = tqdm(total=int(self.tc.num_steps), initial=self.step, desc='train',
                    disable=not self.tc.progress, dynamic_ncols=True)
    self.in_flight, self.sums, self.summed, self.t_log = None, None, 0, time.perf_counter()
    data = run.data
    self.evaluates = data.heldout is not None or data.validation is not None
    self.select = selection_metric(  # what ranks the checkpoints (the "best" one kept)
        self.tc.select_metric, data.heldout is not None, data.validation is not None,
        data.wild_scheme is not None,
        data.validation is not None and 'teacher_lms68' in data.validation)

  def count(self, metrics, last):
    """Add a dispatched step's metrics to the interval's sums (on device) and move
    the bar for the step before it, once finished: the bar's rate counts finished
    steps while the host prepares the next batch."""
    self.sums = metrics if self.sums is None else _add(self.sums, metrics)
    self.summed += 1
    for m in ([self.in_flight] if self.in_flight is not None else []) + ([metrics] * last):
      jax.block_until_ready(m)
      self.bar.update(1)
    self.in_flight = metrics

  def interval_record(self):
    """The interval's mean metrics (the one device -> host transfer of training
    metrics), ``steps_averaged`` and ``images_per_s``; starts the next interval."""
    sums = jax.device_get(self.sums)
    self.check_finite()
    now, n = time.perf_counter(), self.summed
    c = self.run.config.data
    rec = {k: float(v) / n for k, v in sums.items()}
    rec['steps_averaged'] = n
    rec['images_per_s'] = n * (int(c.batch_size_3d) + int(c.batch_size_wild)) / max(
        now - self.t_log, 1e-9)
    self.sums, self.summed, self.t_log = None, 0, now
    self.bar.set_postfix({k: f'{rec[k]:.4g}' for k in ('total', 'l3d', 'l2d_con', 'lcyc')
                          if k in rec} | {'img/s': f'{rec["images_per_s"]:.1f}'}, refresh=False)
    return rec

  def log(self, step, record):
    if self.logger is not None and record:
      self.logger.write(step, record)

  def check_finite(self):
    bad = int(jax.device_get(self.state.bad_step))
    if bad >= 0:
      term = step_lib.LOSS_NAMES[int(jax.device_get(self.state.bad_term))]
      self.ckpt.wait()
      kept = self.ckpt.latest_step()
      raise DaslError(f'non-finite loss {term} at step {bad}; training stopped, ' + (
          f'last good checkpoint kept: step {kept} in {self.run.workdir}' if kept is not None
          else f'no checkpoint saved before it in {self.run.workdir}'))

  def evaluate(self) -> dict:
    self.check_finite()
    variables = self.state.eval_variables(self.run.use_ema)
    if jax.process_count() > 1:  # replicated: every process evaluates its own copy
      variables = jax.device_get(variables)
    return self.run.evaluator.evaluate(variables, self.run.data.heldout,
                                       self.run.data.validation)

  def save_now(self, nme=None, force=False):
    """Save the step reached (unless saved already, or ``force``), with the data's
    position; ``nme`` ranks it."""
    if self.saved_at == self.step and not force:
      return
    self.check_finite()
    position = self.run.data.get_state()
    distributed.assert_same_everywhere(position, 'the data position')
    self.ckpt.save(self.step, self.state, position, nme,
                   variables=self.state.eval_variables(self.run.use_ema))
    self.saved_at = self.step

  def close(self):
    self.bar.close()
    self.ckpt.close()
    if self.logger is not None:
      self.logger.close()
    self.run.data.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, data=None):
  """Train a 2DASL regressor in ``workdir`` (resuming from its latest checkpoint).

  Logs every ``log_every`` steps (the training metrics averaged over the steps
  since the last log line), evaluates the held-out and validation sets every
  ``eval_every`` steps and at the end, checkpoints every ``checkpoint_every``
  steps, at evaluation steps and at the end. A non-finite loss stops the run
  (DaslError naming the step and the term) without saving past it.
  SIGTERM (sent by cluster schedulers before a kill) and Ctrl-C (SIGINT; both
  handled when called from the main thread) stop the run at the next step
  boundary: the step reached is saved (if finite), the write waited for, one line
  printed to stderr, and ``preemption.Terminated`` raised. The first step's
  compilation is not interruptible that way; a second Ctrl-C stops at once
  (``KeyboardInterrupt``). With several processes, SIGTERM to any of them stops all
  of them at the same step boundary, where they save that step together
  (``preemption.stop_check``).
  Returns:
    dict of final metrics (``step``, ``heldout_nme`` when a held-out set exists).
  """
  with preemption.StopSignals() as signals:
    return _train_and_evaluate(config, workdir, data, signals)


def _train_and_evaluate(config, workdir, data, signals):
  config = assets.expand_config(config)
  check_config(config)
  run = setup(config, workdir, data)
  s, tc, num_steps = _Session(run), config.train, int(config.train.num_steps)
  final = {'step': s.step}
  try:
    if s.step == 0 and s.evaluates:  # the start of the held-out curve
      rec0 = s.evaluate()
      s.log(0, rec0)
      final.update({f'{k}_start': v for k, v in rec0.items()})
      if run.data.validation is not None and s.ckpt.latest_step() is None:
        s.save_now(rec0.get(s.select), force=True)  # fine-tuning: "do not train" may win
    start = s.step
    stop, early = preemption.stop_check(signals, start)
    try:
      for step in range(start, num_steps):
        if stop(step) or (early and step == start):
          raise preemption.Terminated(s.step, run.workdir, signals.signum or signal.SIGTERM)
        b3, bw = run.data.next()
        s.state, metrics = run.compiled(s.state, b3, b3 if bw is None else bw,
                                        run.base_key, run.consts)
        done = s.step = final['step'] = step + 1
        last = done == num_steps
        s.count(metrics, last)
        record = s.interval_record() if due(tc.log_every, done, last) else {}
        nme = None
        if s.evaluates and due(tc.eval_every, done, last):
          rec = s.evaluate()
          final.update(rec)
          record.update(rec)
          nme = rec[s.select]
        s.log(done, record)
        # Evaluation steps are saved too, so the best-NME checkpoint can be kept.
        if due(tc.checkpoint_every, done, last) or nme is not None:
          s.save_now(nme)
    except preemption.Terminated as e:
      s.save_now()  # a non-finite state raises DaslError instead
      s.ckpt.wait()
      s.bar.close()  # before the line below, which is the run's last
      what = preemption.STOPPED_BY[e.signum]
      if s.ckpt.latest_step() is None:
        print(f'{what} before the first step: nothing to save; '
              'rerun the same command to start', file=sys.stderr)
      else:
        print(f'{what}: saved step {s.step} in {run.workdir}; '
              'rerun the same command to resume', file=sys.stderr)
      raise
    s.save_now()
    s.ckpt.wait()
    final['selection'] = {'metric': s.select, 'best_step': s.ckpt.best_step()}
    if jax.process_index() == 0:
      write_text_atomic(run.workdir / 'selection.json', json.dumps(final['selection']) + '\n')
    if config.eval.aflw2000_dir:
      final['aflw2000'] = run.evaluator.aflw2000(
          config.eval.aflw2000_dir, jax.device_get(s.state.eval_variables(run.use_ema)))
      s.log(s.step, {f'aflw2000_{k}': v for k, v in final['aflw2000'].items()
                     if isinstance(v, (int, float))})
  finally:
    s.close()
  return final
