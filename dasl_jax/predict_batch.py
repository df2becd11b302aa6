"""Batched regression on 120x120 crops: images -> whitened params -> landmarks.

One jitted function per (module, batch size); the last, partial batch is
padded to the batch size so nothing recompiles, and the padding is dropped.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dasl_jax import camera, inputs, landmarks
from dasl_jax import morphable_model as mm
from dasl_jax.params import ParamStats


def make_predict_fn(module, param_stats: ParamStats, landmark_model: mm.MorphableModel,
                    convention: str, in_channels: int) -> Callable:
  """Build ``predict(variables, image, points18) -> dict`` (jitted).

  Args (of the returned function):
    variables: ``{'params', 'batch_stats'}``.
    image: (B, 120, 120, 3) uint8 BGR crops.
    points18: (B, 18, 2) crop-pixel detector landmarks for the FLM channel
      (ignored by 3-channel models; pass zeros).
  Returns a dict of:
    ``params_w`` (B, 62) whitened, ``params`` (B, 62) de-whitened,
    ``lms`` (B, 68, 2) crop pixels in ``convention``, ``angles`` (B, 3) yaw,
    pitch, roll degrees (``camera.pose_angles``, 3DDFA_V2's convention; AFLW
    ground truth uses ``camera.aflw_pose_angles``).
  """
  lm_model = landmark_model.landmark_model()
  mean = jnp.asarray(param_stats.mean, jnp.float32)
  std = jnp.asarray(param_stats.std, jnp.float32)

  @jax.jit
  def predict(variables, image, points18):
    x = inputs.model_input(image, points18 if in_channels == 4 else None,
                           None, in_channels)
    pw = module.apply(variables, x, train=False)
    p = pw * std + mean
    lms = mm.landmarks2d(lm_model, p, convention)
    fR = p[:, :12].reshape(-1, 3, 4)[:, :, :3]
    return {'params_w': pw, 'params': p, 'lms': lms, 'angles': camera.pose_angles(fR)}

  return predict


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


def predict_all(predict, variables, images: Callable[[np.ndarray], np.ndarray], n: int,
                batch_size: int = 128, points18: Optional[np.ndarray] = None,
                progress: bool = True, desc: str = 'predict'):
  """Run ``predict`` over ``n`` items in fixed-size batches.

  Args:
    predict: from :func:`make_predict_fn`.
    images: function mapping an index array (b,) to (b, 120, 120, 3) uint8
      (read batch by batch, so all crops are never in memory at once).
    n: number of items.
    points18: optional (n, 18, 2) FLM landmarks.
  Returns:
    dict of numpy arrays with leading dimension n (same keys as ``predict``).
  """
  replicate, put = batch_placement(batch_size)
  variables = replicate(variables)  # once, not with every batch
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
    img = np.asarray(images(idx))
    pts = (np.zeros((len(idx), 18, 2), np.float32) if points18 is None
           else np.asarray(points18[idx], np.float32))
    pad = batch_size - len(idx)
    if pad:  # keep one compiled shape
      img = np.concatenate([img, np.repeat(img[-1:], pad, 0)])
      pts = np.concatenate([pts, np.repeat(pts[-1:], pad, 0)])
    out = predict(variables, put(img), put(pts))
    if pending is not None:
      fetch(pending)
    pending = (out, len(idx))
  if pending is not None:
    fetch(pending)
  bar.close()
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def flm_points(detector68):
  """(N, 68, 2) detector landmarks -> (N, 18, 2) FLM points (2DASL's selection)."""
  return landmarks.select18_np(np.asarray(detector68, np.float32))
