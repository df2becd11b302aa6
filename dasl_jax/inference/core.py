"""The prediction core: one forward pass from crops to parameters, landmarks and pose.

Everything that runs a regressor on 120x120 crops calls :func:`forward` (pure,
traced once per shape) through :func:`make_forward` (jitted) and
:func:`run_batches` (fixed-size batches, padding, device placement, progress):
training's held-out and validation evaluation, ``experiments.evaluate``, the
photo/video ``Predictor``, ``export`` and the notebook.

The FLM channel of a 4-channel model is drawn either from given points
(``points18``, e.g. a detector's landmarks; ``bootstrap_iters=0``) or
self-bootstrapped: the first pass from the mean face's 18 points under the
mean pose, each next pass from the previous pass's prediction.

Flip test-time averaging (``tta='flip'``, a :class:`geometry.mirror.MirrorFit`
given to :func:`make_forward`): each crop and its mirror image run in one batch
of twice the size (the mirror's FLM points mirrored and re-ordered left/right),
the mirror's de-whitened parameters are mapped back
(``geometry.mirror.mirror_params``) and averaged with the direct ones, and
landmarks and pose come from the averaged parameters.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dasl_jax.geometry import camera
from dasl_jax.models import inputs
from dasl_jax.geometry import landmarks
from dasl_jax.geometry import mirror as MIR
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.geometry.params import ParamStats

OUTPUTS = ('whitened', 'params', 'lms68', 'pose')
TTA = ('none', 'flip')  # test-time averaging: none, or with the mirror image


def mirror_fit(tta: str, stats: ParamStats, lm_model: mm.MorphableModel, convention: str):
  """The ``flip`` argument of :func:`make_forward` for a ``--tta`` value.

  Returns:
    None for 'none'; for 'flip' the model's :class:`geometry.mirror.MirrorFit`
    (float32; the ridge that the teacher's and augmentation's mirror use).
  Raises:
    ValueError: an unknown ``tta`` (commands check their flag first).
  """
  if tta not in TTA:
    raise ValueError(f'tta must be one of {", ".join(TTA)}, got {tta!r}')
  if tta == 'none':
    return None
  return MIR.mirror_fit(lm_model, convention, stats).astype(np.float32)


def outputs(whitened, stats: ParamStats, lm_model: mm.MorphableModel, convention: str):
  """Whitened parameters -> everything a caller reads.

  Args:
    whitened: (B, 62).
    stats: whitening statistics (a pytree).
    lm_model: 68-row morphable model (``MorphableModel.landmark_model()``).
    convention: pixel convention 'v1' or 'v2'.
  Returns:
    dict ``whitened`` (B, 62), ``params`` (B, 62) de-whitened, ``lms68``
    (B, 68, 2) crop pixels, ``pose`` (B, 3) yaw, pitch, roll in degrees
    (``camera.pose_angles``, 3DDFA_V2's convention).
  """
  p = stats.dewhiten(whitened)
  fR = p[..., :12].reshape(p.shape[:-1] + (3, 4))[..., :3]
  return {'whitened': whitened, 'params': p,
          'lms68': mm.landmarks2d(lm_model, p, convention),
          'pose': camera.pose_angles(fR)}


def mean_face_points18(stats: ParamStats, lm_model: mm.MorphableModel, convention: str):
  """(18, 2) crop pixels: the FLM points of the mean face under the mean pose."""
  return landmarks.select18(mm.landmarks2d(lm_model, jnp.asarray(stats.mean), convention))


def forward(module, variables, stats: ParamStats, lm_model: mm.MorphableModel, crops,
            points18=None, mask18=None, *, in_channels: int, convention: str,
            bootstrap_iters: int = 0, flip: Optional[MIR.MirrorFit] = None):
  """One regression of a batch of crops (pure; jit it with :func:`make_forward`).

  Args:
    module: the regressor (``models.create_regressor``); static.
    variables: ``{'params', 'batch_stats'}``.
    crops: (B, 120, 120, 3) uint8 BGR.
    points18: (B, 18, 2) crop-pixel FLM points (4-channel models with
      ``bootstrap_iters=0``), else ignored (may be None).
    mask18: (B, 18) visibility of ``points18`` (1 drawn), or None (all drawn).
    in_channels: 3 or 4.
    bootstrap_iters: 4-channel models: 0 uses ``points18``; k > 0 runs k
      self-bootstrapped passes from the mean face (``points18`` ignored).
    flip: None, or flip test-time averaging with this mirror
      (:func:`mirror_fit`): the crops and their mirror images run as one batch
      of 2B, and the parameters are the mean of the direct ones and the
      mirrored prediction's mapped back.
  Returns:
    dict as :func:`outputs`.
  """
  if flip is None:
    w = _regress(module, variables, stats, lm_model, crops, points18, mask18,
                 in_channels, convention, bootstrap_iters)
    return outputs(w, stats, lm_model, convention)
  b, size = crops.shape[0], crops.shape[2]
  crops = jnp.concatenate([crops, crops[:, :, ::-1]])
  if points18 is not None:
    points18 = jnp.concatenate([points18, MIR.mirror_points(points18, size)])
  if mask18 is not None:
    mask18 = jnp.concatenate([mask18, MIR.mirror_mask(mask18)])
  p = stats.dewhiten(_regress(module, variables, stats, lm_model, crops, points18, mask18,
                              in_channels, convention, bootstrap_iters))
  p = 0.5 * (p[:b] + MIR.mirror_params(p[b:], flip))
  return outputs(stats.whiten(p), stats, lm_model, convention)


def _regress(module, variables, stats, lm_model, crops, points18, mask18, in_channels,
             convention, bootstrap_iters):
  """:func:`forward` without test-time averaging: -> whitened (B, 62)."""
  if in_channels == 3:
    return module.apply(variables, inputs.model_input(crops, in_channels=3), train=False)
  if bootstrap_iters == 0:
    if points18 is None:
      raise ValueError('a 4-channel model needs points18 or bootstrap_iters > 0')
    x = inputs.model_input(crops, points18, mask18, in_channels=4)
    return module.apply(variables, x, train=False)
  pts = jnp.broadcast_to(mean_face_points18(stats, lm_model, convention),
                         (crops.shape[0], 18, 2))
  w = None
  for k in range(bootstrap_iters):
    if k:  # predicted points: all visible
      pts = landmarks.select18(mm.landmarks2d(lm_model, stats.dewhiten(w), convention))
    x = inputs.model_input(crops, pts, None, in_channels=4)
    w = module.apply(variables, x, train=False)
  return w


def make_forward(module, in_channels: int, convention: str, bootstrap_iters: int = 0,
                 flip: Optional[MIR.MirrorFit] = None):
  """Jitted ``f(variables, stats, lm_model, crops, points18, mask18) -> dict``.

  Same arguments and outputs as :func:`forward`; ``points18`` and ``mask18``
  must be arrays (zeros and ones when unused) so one trace serves all calls.
  ``flip`` (:func:`mirror_fit`) turns on flip test-time averaging; its arrays
  are constants of the compiled function.
  """
  if flip is not None:
    flip = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), flip)
  return jax.jit(functools.partial(forward, module, in_channels=int(in_channels),
                                   convention=str(convention),
                                   bootstrap_iters=int(bootstrap_iters), flip=flip))


def batch_placement(batch_size: int):
  """``(replicate, split)``: how weights and batches go to the local devices.

  With several (host) devices (``cpu_runtime.split_host_devices``) and a batch
  they divide, each batch is split over them and the weights replicated; else
  everything goes to the default device.
  """
  devices = jax.local_devices()
  if len(devices) > 1 and batch_size % len(devices) == 0:
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    mesh = Mesh(np.array(devices), ('batch',))
    rep, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec('batch'))
    return (lambda tree: jax.device_put(tree, rep)), (lambda a: jax.device_put(a, split))
  return jax.device_put, (lambda a: a)


def _pow2(n, cap):
  """Smallest power of two >= n (at most cap): few shapes, few compilations."""
  b = 1
  while b < n and b < cap:
    b *= 2
  return b


def run_batches(fn, consts, get: Callable[[np.ndarray], tuple], n: int, batch_size: int = 128,
                pad: str = 'full', progress: bool = False, desc: str = 'predict'):
  """Run ``fn(*consts, *get(idx))`` over ``n`` items in batches; numpy results.

  Args:
    fn: e.g. from :func:`make_forward`; returns a dict of (b, ...) arrays.
    consts: tuple of arguments placed once (replicated over local devices when
      batches are split over them), e.g. ``(variables, stats, lm_model)``.
    get: index array (b,) -> tuple of (b, ...) numpy arrays (read batch by
      batch, so all crops are never in memory at once).
    pad: 'full' pads every batch to ``batch_size`` (one compiled shape, batches
      split over host devices); 'pow2' pads to the next power of two (small
      inputs stay cheap; interactive use).
  Returns:
    dict of numpy arrays with leading dimension ``n``.
  """
  if pad == 'full':
    replicate, put = batch_placement(batch_size)
  else:
    replicate, put = jax.device_put, (lambda a: a)
  consts = replicate(consts)  # once, not with every batch
  outs = []
  bar = tqdm(total=n, desc=desc, unit='img', disable=not progress)
  pending = None  # (result on device, count): fetched after the next batch is read

  def fetch(p):
    out, count = p
    outs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:count], out))
    bar.update(count)

  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    # Reading (JPEG decoding) runs while the previous batch computes: jitted
    # calls dispatch asynchronously, np.asarray in fetch() waits.
    args = [np.asarray(a) for a in get(idx)]
    size = batch_size if pad == 'full' else _pow2(len(idx), batch_size)
    extra = size - len(idx)
    if extra:  # keep few compiled shapes; the padding rows are dropped
      args = [np.concatenate([a, np.repeat(a[-1:], extra, 0)]) for a in args]
    out = fn(*consts, *[put(a) for a in args])
    if pending is not None:
      fetch(pending)
    pending = (out, len(idx))
  if pending is not None:
    fetch(pending)
  bar.close()
  if not outs:
    return {}
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def predict_crops(fn, variables, stats, lm_model, crops: Callable[[np.ndarray], np.ndarray],
                  n: int, points18: Optional[np.ndarray] = None,
                  mask18: Optional[np.ndarray] = None, batch_size: int = 128,
                  pad: str = 'full', progress: bool = False, desc: str = 'predict'):
  """:func:`run_batches` for a :func:`make_forward` function.

  Args:
    crops: index array (b,) -> (b, 120, 120, 3) uint8, or an (n, 120, 120, 3) array.
    points18: optional (n, 18, 2) FLM points (zeros when None); mask18: (n, 18).
  Returns:
    dict of numpy arrays (n, ...): ``whitened``, ``params``, ``lms68``, ``pose``.
  """
  if not callable(crops):
    arr = np.asarray(crops)
    crops = lambda ii: arr[ii]  # noqa: E731
  pts = None if points18 is None else np.asarray(points18, np.float32)
  vis = None if mask18 is None else np.asarray(mask18, np.float32)

  def get(idx):
    p = np.zeros((len(idx), 18, 2), np.float32) if pts is None else pts[idx]
    m = np.ones((len(idx), 18), np.float32) if vis is None else vis[idx]
    return np.asarray(crops(idx), np.uint8), p, m

  if n == 0:
    return {'whitened': np.zeros((0, 62), np.float32), 'params': np.zeros((0, 62), np.float32),
            'lms68': np.zeros((0, 68, 2), np.float32), 'pose': np.zeros((0, 3), np.float32)}
  return run_batches(fn, (variables, stats, lm_model), get, n, batch_size, pad, progress, desc)


def flm_points(detector68):
  """(N, 68, 2) detector landmarks -> (N, 18, 2) FLM points (2DASL's selection)."""
  return landmarks.select18_np(np.asarray(detector68, np.float32))
