"""The 2DASL train step: both data paths, the critic update, one compiled function.

``train_step(state, batch_3d, batch_wild, base_key, consts, ctx=...)`` is pure:

* 3D path: ``L_3d`` (WPDC by default) of the prediction on 3D-annotated crops
  against their whitened ground truth;
* wild path: first pass with the FLM from the detector's 18 points; ``L_2d_con``;
  the FLM is rebuilt from the predicted 18 landmarks (no gradient), a second
  pass gives ``L_3d_con`` and ``L_cyc``; ``L_sc`` asks the critic to score
  ``(z(I_wild), p_hat)`` as real;
* critic: real ``(z(I_3d), p_star)`` vs fake ``(z(I_wild), stop_grad(p_hat))``.

The 3D crops and the first wild pass run as one batch through the network (one
set of batch-norm statistics for the step, as when the two streams are mixed);
the second wild pass updates the running statistics once more (in training
mode it normalises with its own batch statistics, as PyTorch would).
Randomness is ``fold_in(base_key, step)``, so a resumed run draws the same keys.
:func:`make_train_step` jits it once, data-parallel over a ``Mesh`` with a
'data' axis (batch sharded, state replicated), state donated.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dasl_jax.models import inputs
from dasl_jax.geometry import landmarks as lm
from dasl_jax import losses
from dasl_jax.errors import DaslError
from dasl_jax.face_model.morphable_model import MorphableModel
from dasl_jax.training.state import TrainState

# Loss terms in a fixed order (bad_term indexes it).
LOSS_NAMES = ('l3d', 'l2d_con', 'l3d_con', 'lcyc', 'lsc', 'total', 'critic')
BATCH_KEYS_3D = ('image', 'points18', 'mask18', 'params')
BATCH_KEYS_WILD = ('image', 'points18', 'mask18')
# Wild-batch keys used when the data side gives them.
OPTIONAL_KEYS_WILD = ('flm18',)


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Static things a step needs (hashable; not traced)."""
  module: Any
  critic: Any
  tx: Any
  critic_tx: Any
  schedule: Any
  in_channels: int
  convention: str
  freeze_bn: bool
  loss: Any          # a frozen copy of config.loss (FrozenConfigDict)
  critic_every: int
  ema_decay: float = 0.0   # > 0: keep an exponential moving average of the weights


def make_consts(model: MorphableModel, mean, std, wpdc_model: MorphableModel = None,
                wild_scheme=None, point_weights='sel18', weight_power=2):
  """Arrays the step reads but never changes: landmark model, WPDC sampling model,
  whitening, the wild labels' 18-point scheme (``face_model.schemes``; default
  iBUG's own definitions, ``schemes.ibug18()``) and the 2D terms' per-point weights on
  the squared error (``sel18``: 2DASL's, to ``weight_power``; ``noise``: inverse to each
  point's fitted label disagreement, ``schemes.noise_weights``)."""
  from dasl_jax.face_model import schemes
  scheme = wild_scheme if wild_scheme is not None else schemes.ibug18()
  if scheme.size != 18:
    raise DaslError(f'the wild labels\' scheme {scheme.name} has {scheme.size} points; '
                    'the 2D terms use 18')
  model68 = model.landmark_model()
  # Face size of the 68 points over that of the 18 on the mean face (FLM jitter scale).
  lm3 = np.asarray(model68.u, np.float64).reshape(68, 3)[:, :2]
  ratio = float(lm.box_size(lm3) / lm.box_size(lm.select18_np(lm3)))
  return {'model68': model68, 'wpdc_model': wpdc_model if wpdc_model is not None else model68,
          'mean': jnp.asarray(mean, jnp.float32), 'std': jnp.asarray(std, jnp.float32),
          'box68_over_18': jnp.asarray(ratio, jnp.float32),
          'wild_combine': jnp.asarray(scheme.combine, jnp.float32),
          'wild_weights': jnp.asarray(_point_weights(scheme, point_weights, weight_power)),
          'wild_offsets': jnp.asarray(scheme.offsets, jnp.float32)}


def _point_weights(scheme, kind, power):
  from dasl_jax.face_model import schemes
  if kind == 'sel18':
    return (lm.SEL18_WEIGHTS.astype(np.float64) ** power).astype(np.float32)
  if kind == 'noise':
    return schemes.noise_weights(scheme, lm.SEL18_WEIGHTS, power)
  raise DaslError(f"--config.loss.point_weights must be sel18 or noise, got {kind!r}")


def wild_path_on(loss_cfg) -> bool:
  return bool(loss_cfg.use_2d or loss_cfg.use_3d_con or loss_cfg.use_cyc or loss_cfg.use_sc
              or loss_cfg.train_critic)


def _apply(ctx, params, batch_stats, x):
  """Regressor forward: (B, H, W, C) -> (B, 62) and updated batch statistics."""
  variables = {'params': params, 'batch_stats': batch_stats}
  if ctx.freeze_bn:
    return ctx.module.apply(variables, x, train=False), batch_stats
  out, upd = ctx.module.apply(variables, x, train=True, mutable=['batch_stats'])
  return out, upd['batch_stats']


def _l3d(ctx, consts, pw, target, key):
  kind = ctx.loss.l3d_kind
  if kind == 'wpdc':
    return losses.wpdc(pw, target, consts['wpdc_model'], consts['mean'], consts['std'], key,
                       n_resample=ctx.loss.wpdc_resample)
  if kind == 'vdc':
    return losses.vdc(pw, target, consts['wpdc_model'], consts['mean'], consts['std'])
  if kind == 'mse':
    return jnp.mean((pw - target) ** 2)
  raise DaslError(f'--config.loss.l3d_kind must be wpdc, vdc or mse, got {kind!r}')


def train_step(state: TrainState, batch_3d, batch_wild, base_key, consts, *, ctx: StepContext):
  """One 2DASL step.

  Args:
    state: :class:`TrainState`.
    batch_3d: dict ``image`` (B3, H, W, 3) uint8, ``points18`` (B3, 18, 2), ``mask18``
      (B3, 18), ``params`` (B3, 62) whitened.
    batch_wild: dict ``image`` (Bw, H, W, 3), ``points18`` (Bw, 18, 2), ``mask18`` (Bw, 18).
    base_key: PRNG key of the run; the step's key is ``fold_in(base_key, state.step)``.
    consts: :func:`make_consts`.
  Returns:
    (new state, metrics dict of scalars on device).
  """
  lc = ctx.loss
  wild = wild_path_on(lc)
  key = jax.random.fold_in(base_key, state.step)
  k_j3, k_jw = jax.random.split(jax.random.fold_in(key, 7))
  b3 = batch_3d['image'].shape[0]

  def flm_points(k, pts, mask):
    # The FLM input sees detector-like errors; the 2D targets stay the given points.
    if not lc.flm_jitter or ctx.in_channels != 4:
      return pts
    return lm.jitter_points(k, pts, mask, lc.flm_jitter, consts['box68_over_18'])

  x3 = inputs.model_input(batch_3d['image'],
                          flm_points(k_j3, batch_3d['points18'], batch_3d['mask18']),
                          batch_3d['mask18'], ctx.in_channels)
  target = jnp.asarray(batch_3d['params'], jnp.float32)
  if wild:
    # The FLM is drawn from the labels moved into iBUG's definitions when the data
    # side could (``flm18``: the teacher's pose through the scheme), else the labels.
    xw = inputs.model_input(batch_wild['image'],
                            flm_points(k_jw, batch_wild.get('flm18', batch_wild['points18']),
                                       batch_wild['mask18']),
                            batch_wild['mask18'], ctx.in_channels)
    det18 = jnp.asarray(batch_wild['points18'], jnp.float32)
    mask18 = jnp.asarray(batch_wild['mask18'], jnp.float32)
    img_w = inputs.normalize_image(batch_wild['image'])
  img_3 = inputs.normalize_image(batch_3d['image'])
  model68, mean, std = consts['model68'], consts['mean'], consts['std']

  def wild18(pw, l2):
    # The prediction's points as the wild labels define them (face_model.schemes).
    return losses.wild_points_2d(pw, l2, mean, std, consts['wild_combine'],
                                 consts['wild_offsets'])

  def loss_fn(params):
    terms = {}
    bs = state.batch_stats
    if wild:
      out, bs = _apply(ctx, params, bs, jnp.concatenate([x3, xw], axis=0))
      p3, pw1 = out[:b3], out[b3:]
    else:
      p3, bs = _apply(ctx, params, bs, x3)
      pw1 = None
    if lc.use_3d:
      terms['l3d'] = _l3d(ctx, consts, p3, target, key)
    if wild:
      l3_1, l2_1 = losses.landmarks_from_whitened(pw1, model68, mean, std, ctx.convention)
      if lc.use_2d:
        terms['l2d_con'] = losses.weighted_points_2d(
            wild18(pw1, l2_1), det18, mask18, consts['wild_weights'], 1, lc.robust_2d)
      if lc.use_3d_con or lc.use_cyc:
        # The FLM is rebuilt from the prediction: integer pixels, no gradient.
        y18 = jax.lax.stop_gradient(lm.select18(l2_1))
        x2 = inputs.model_input(batch_wild['image'], y18, None, ctx.in_channels)
        pw2, bs = _apply(ctx, params, bs, x2)
        l3_2, l2_2 = losses.landmarks_from_whitened(pw2, model68, mean, std, ctx.convention)
        if lc.use_3d_con:
          terms['l3d_con'] = losses.landmark_3d_consistency(l3_2, l3_1)
        if lc.use_cyc:
          terms['lcyc'] = losses.weighted_points_2d(
              wild18(pw2, l2_2), det18, mask18, consts['wild_weights'], 1, lc.robust_2d)
      if lc.use_sc:
        # Critic weights are constants here: only the regressor learns from L_sc.
        cp = jax.lax.stop_gradient(state.critic_params)
        terms['lsc'] = losses.self_critic_generator(ctx.critic.apply(cp, img_w, pw1))
    weights = {'l3d': lc.w_3d, 'l2d_con': lc.w_2d, 'l3d_con': lc.w_3d_con, 'lcyc': lc.w_cyc,
               'lsc': lc.w_sc}
    total = sum((weights[k] * v for k, v in terms.items()), jnp.zeros((), jnp.float32))
    return total, (terms, bs, pw1)

  (total, (terms, new_bs, pw1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, new_opt = ctx.tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  terms = dict(terms, total=total)
  metrics = {}

  new_cparams, new_copt = state.critic_params, state.critic_opt_state
  if wild and lc.train_critic:
    fake_p = jax.lax.stop_gradient(pw1)

    def critic_fn(cp):
      real = ctx.critic.apply(cp, img_3, target)
      fake = ctx.critic.apply(cp, img_w, fake_p)
      if lc.critic_mismatch:
        # Each 3D image with another example's label: a negative that only the
        # pairing gives away, so the critic must read parameters against the image.
        mism = ctx.critic.apply(cp, img_3, jnp.roll(target, 1, axis=0))
        return losses.critic_loss(real, jnp.concatenate([fake, mism])), (real, fake, mism)
      return losses.critic_loss(real, fake), (real, fake, None)

    (closs, (real, fake, mism)), cgrads = jax.value_and_grad(critic_fn, has_aux=True)(
        state.critic_params)
    cupd, copt = ctx.critic_tx.update(cgrads, state.critic_opt_state, state.critic_params)
    cpar = optax.apply_updates(state.critic_params, cupd)
    # Critic update ratio: only every critic_every-th step changes the critic.
    do = (state.step % ctx.critic_every) == 0
    new_cparams = jax.tree_util.tree_map(lambda a, b: jnp.where(do, a, b), cpar, new_cparams)
    new_copt = jax.tree_util.tree_map(lambda a, b: jnp.where(do, a, b), copt, new_copt)
    terms['critic'] = closs
    metrics['critic_acc_real'] = jnp.mean(real > 0)
    metrics['critic_acc_fake'] = jnp.mean(fake < 0)
    if mism is not None:
      metrics['critic_acc_mismatch'] = jnp.mean(mism < 0)

  # Non-finite guard: such a step changes nothing and records where it happened.
  term_ok = jnp.stack([jnp.isfinite(terms[n]) if n in terms else jnp.array(True)
                       for n in LOSS_NAMES])
  grad_norm = optax.tree.norm(grads)
  ok = jnp.all(term_ok) & jnp.isfinite(grad_norm)
  first_bad = jnp.where(jnp.all(term_ok), LOSS_NAMES.index('total'), jnp.argmin(term_ok))
  keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)
  new_ema = state.ema
  if ctx.ema_decay > 0:
    # Bias-corrected warm-up: early steps average over what exists so far.
    t = state.step.astype(jnp.float32)
    d = jnp.minimum(ctx.ema_decay, (1.0 + t) / (10.0 + t))
    new_ema = {'params': jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p,
                                                state.ema['params'], new_params),
               'batch_stats': new_bs}
  new_state = TrainState(
      step=state.step + 1,
      params=keep(new_params, state.params),
      batch_stats=keep(new_bs, state.batch_stats),
      ema=keep(new_ema, state.ema),
      opt_state=keep(new_opt, state.opt_state),
      critic_params=keep(new_cparams, state.critic_params),
      critic_opt_state=keep(new_copt, state.critic_opt_state),
      bad_step=jnp.where(ok | (state.bad_step >= 0), state.bad_step, state.step),
      bad_term=jnp.where(ok | (state.bad_step >= 0), state.bad_term,
                         first_bad.astype(jnp.int32)))
  metrics.update(terms)
  metrics['grad_norm'] = grad_norm
  metrics['param_norm'] = optax.tree.norm(state.params)
  metrics['lr'] = jnp.asarray(ctx.schedule(state.step), jnp.float32)
  return new_state, metrics


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (every process's, after jax.distributed) with axis 'data'."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ('data',))


class CompiledStep:
  """``train_step`` jitted once: state donated, batches sharded on 'data', state replicated.

  ``traces`` counts how often Python traced the step (1 after any number of
  same-shaped calls: no recompilation).
  """

  def __init__(self, ctx: StepContext, mesh: Mesh = None):
    self.mesh = mesh if mesh is not None else data_mesh()
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.batch_sharding = NamedSharding(self.mesh, PartitionSpec('data'))
    self.traces = 0

    def step(state, b3, bw, key, consts):
      self.traces += 1
      return train_step(state, b3, bw, key, consts, ctx=ctx)

    self._jitted = jax.jit(
        step,
        in_shardings=(self.replicated, self.batch_sharding, self.batch_sharding,
                      self.replicated, self.replicated),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=(0,))

  def put_batch(self, batch, keys, optional=()):
    """Host batch -> device arrays sharded over 'data' (only the keys the step reads;
    ``optional`` ones when the batch has them)."""
    keys = tuple(keys) + tuple(k for k in optional if k in batch)
    n = len(jax.local_devices()) if jax.process_count() > 1 else self.mesh.devices.size
    out = {}
    for k in keys:
      if k not in batch:
        raise DaslError(f'batch has no {k!r} (has {sorted(batch)})')
      a = batch[k]
      if a.shape[0] % n:
        raise DaslError(f'batch size {a.shape[0]} is not a multiple of the {n} devices; '
                        'change --config.data.batch_size_3d / batch_size_wild')
      if jax.process_count() > 1:
        # Each process holds its own slice of the global batch.
        out[k] = jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(a))
      else:
        out[k] = jax.device_put(a, self.batch_sharding)
    return out

  def put_replicated(self, tree):
    return jax.device_put(tree, self.replicated)

  def export(self, platforms, state, batch_3d, batch_wild, key, consts):
    """The step lowered with ``jax.export`` for ``platforms`` (e.g. ('cuda', 'tpu'));
    needs no such device. Arguments as for a call. Returns ``jax.export.Exported``."""
    b3 = self.put_batch(batch_3d, BATCH_KEYS_3D)
    bw = self.put_batch(batch_wild, BATCH_KEYS_WILD, OPTIONAL_KEYS_WILD)
    return jax.export.export(self._jitted, platforms=tuple(platforms))(
        state, b3, bw, key, consts)

  def lower(self, state, batch_3d, batch_wild, key, consts):
    """The step lowered for these arguments' shapes (``jax.stages.Lowered``); its
    ``.compile()`` is the executable a call with such arguments runs, with its cost and
    memory analyses (benchmarks/accelerator.py times and sizes it that way)."""
    b3 = self.put_batch(batch_3d, BATCH_KEYS_3D)
    bw = self.put_batch(batch_wild, BATCH_KEYS_WILD, OPTIONAL_KEYS_WILD)
    return self._jitted.lower(state, b3, bw, key, consts)

  def __call__(self, state, batch_3d, batch_wild, key, consts):
    b3 = self.put_batch(batch_3d, BATCH_KEYS_3D)
    bw = self.put_batch(batch_wild, BATCH_KEYS_WILD, OPTIONAL_KEYS_WILD)
    return self._jitted(state, b3, bw, key, consts)
