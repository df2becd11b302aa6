"""Landmark schemes: the 18-point selection, 68 -> 21 (AFLW), 21 -> 18, the FLM.

Points are (..., K, D) with coordinates last. Visibility masks are (..., K)
floats (1 visible, 0 not).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.geometry.camera import CROP_SIZE

# The 18 points of 2DASL's 2D terms, 0-based iBUG-68 indices; a pair means the
# mean of two points. Order: brows (6), eyes (corner, centre, corner) x 2,
# nose (left nostril, tip, right nostril), mouth (left corner, centre, right).
SEL18 = (17, 19, 21, 22, 24, 26,
         36, (37, 40), 39, 42, (43, 46), 45,
         31, 30, 35,
         48, (62, 66), 54)
# Weights on the point distance (the released code squares them with the error).
SEL18_WEIGHTS = np.array([0.5] * 6 + [0.5, 1.0, 0.5, 0.5, 1.0, 0.5] +
                         [0.5, 2.0, 0.5] + [1.0, 2.0, 1.0], np.float32)

# AFLW's 21 points from iBUG-68 (3DDFA's benchmark mapping), 0-based; a tuple
# means the mean of those points.
AFLW21_FROM_68 = (17, 19, 21, 22, 24, 26,
                  36, tuple(range(36, 42)), 39, 42, tuple(range(42, 48)), 45,
                  2, 31, 30, 35, 14,
                  48, tuple(range(60, 68)), 54, 8)
# The 18 points are AFLW's 21 without the two ear lobes (12, 16) and the chin (20).
SEL18_FROM_AFLW21 = np.array([i for i in range(21) if i not in (12, 16, 20)])


def _selection_matrix(spec, n_in=68):
  """(K, n_in) averaging matrix for a tuple of indices / index groups."""
  m = np.zeros((len(spec), n_in), np.float32)
  for k, s in enumerate(spec):
    idx = s if isinstance(s, tuple) else (s,)
    m[k, list(idx)] = 1.0 / len(idx)
  return m


SEL18_MATRIX = _selection_matrix(SEL18)
AFLW21_MATRIX = _selection_matrix(AFLW21_FROM_68)


def select18(pts68):
  """68 points -> the 18 of 2DASL's 2D terms.

  Args:
    pts68: (..., 68, D).
  Returns:
    (..., 18, D); weights are :data:`SEL18_WEIGHTS`.
  """
  return jnp.einsum('kn,...nd->...kd', SEL18_MATRIX, pts68)


def select18_np(pts68):
  """numpy twin of :func:`select18` for data pipelines (no device transfer)."""
  return np.einsum('kn,...nd->...kd', SEL18_MATRIX, pts68)


def aflw21_from_68(pts68):
  """68 points -> AFLW's 21 (eye and mouth centres are means). (..., 68, D) -> (..., 21, D)."""
  return jnp.einsum('kn,...nd->...kd', AFLW21_MATRIX, pts68)


def sel18_from_aflw21(pts21, visible21=None):
  """AFLW 21 points -> the 18 (drop ears and chin).

  Args:
    pts21: (..., 21, D).
    visible21: optional (..., 21) mask.
  Returns:
    (..., 18, D) and, when given, (..., 18) mask.
  """
  out = pts21[..., SEL18_FROM_AFLW21, :]
  if visible21 is None:
    return out
  return out, visible21[..., SEL18_FROM_AFLW21]


def flm(points, mask=None, size=CROP_SIZE):
  """The 4th-channel facial landmark map: -1 everywhere, +1 at each point's pixel.

  Each point lands on the integer pixel ``floor(x), floor(y)`` clamped into the
  image (0-based array indices, row = y). Not differentiable (integer rounding);
  gradients are stopped.

  Args:
    points: (..., K, 2) crop pixel coordinates (usually the 18 points).
    mask: optional (..., K); points with mask 0 are not drawn.
  Returns:
    (..., size, size) float32 map.
  """
  points = jax.lax.stop_gradient(jnp.asarray(points, jnp.float32))
  # Non-finite points are not drawn (as in flm_np); NaN cast to int is undefined.
  finite = jnp.all(jnp.isfinite(points), axis=-1)
  points = jnp.where(finite[..., None], points, 0.0)
  xy = jnp.clip(jnp.floor(points), 0, size - 1).astype(jnp.int32)
  flat = xy[..., 1] * size + xy[..., 0]  # (..., K)
  hits = jax.nn.one_hot(flat, size * size, dtype=jnp.float32)  # (..., K, size*size)
  hits = hits * finite[..., None].astype(jnp.float32)
  if mask is not None:
    hits = hits * jnp.asarray(mask, jnp.float32)[..., None]
  on = jnp.max(hits, axis=-2) > 0
  out = jnp.where(on, 1.0, -1.0)
  return out.reshape(out.shape[:-1] + (size, size))


def flm_np(points, mask=None, size=CROP_SIZE):
  """numpy twin of :func:`flm` for data pipelines. (K, 2) -> (size, size)."""
  points = np.asarray(points, np.float32)
  out = -np.ones((size, size), np.float32)
  keep = np.ones(len(points), bool) if mask is None else np.asarray(mask) > 0
  keep &= np.all(np.isfinite(points), axis=-1)
  xy = np.clip(np.floor(np.nan_to_num(points)), 0, size - 1).astype(np.int64)
  out[xy[keep, 1], xy[keep, 0]] = 1.0
  return out


def box_size(points, mask=None):
  """sqrt(w * h) of the box of the (visible) points: (..., K, 2) -> (...,); 0 when
  fewer than one point is visible."""
  points = jnp.asarray(points, jnp.float32)
  vis = (jnp.ones(points.shape[:-1], bool) if mask is None
         else jnp.asarray(mask, jnp.float32) > 0)[..., None]
  lo = jnp.min(jnp.where(vis, points, jnp.inf), axis=-2)
  hi = jnp.max(jnp.where(vis, points, -jnp.inf), axis=-2)
  wh = jnp.where(jnp.isfinite(hi - lo), hi - lo, 0.0)
  return jnp.sqrt(jnp.maximum(wh[..., 0] * wh[..., 1], 0.0))


def jitter_points(key, points, mask, nme, box_ratio=1.0):
  """Detector-like landmark errors for the FLM input: iid Gaussian per point and axis.

  A 2D isotropic Gaussian with per-axis deviation ``s`` has mean length
  ``s * sqrt(pi / 2)``, so ``s = nme * d / sqrt(pi / 2)`` gives a mean point error
  of ``nme`` times the face size ``d``. ``d`` is the sqrt(w*h) of the 68-point box,
  estimated as ``box_ratio`` times that of the visible given points (the 18 points
  span less of the face than the 68; the caller measures the ratio on the mean face).

  Args:
    key: PRNG key.
    points: (B, K, 2) crop pixels; mask: (B, K) or None.
    nme: mean point error as a fraction of the face size (FAN on AFLW2000-3D: ~0.058).
    box_ratio: scalar, 68-point box size over the given points' box size.
  Returns:
    (B, K, 2) float32 jittered points (no gradient).
  """
  points = jax.lax.stop_gradient(jnp.asarray(points, jnp.float32))
  d = box_size(points, mask) * box_ratio
  s = nme * d / jnp.sqrt(jnp.pi / 2.0)
  return points + s[..., None, None] * jax.random.normal(key, points.shape, jnp.float32)
