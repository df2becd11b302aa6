"""The horizontal mirror of a crop, its landmarks and its 62 parameters.

One definition serves augmentation (``data.augment``: flipped training
examples), the teacher's and the prediction core's flip test-time averaging
(``inference.core``: the prediction on the mirrored crop mapped back and
averaged with the direct one).

Pixel coordinates follow OpenCV: crop pixel ``(u, v)`` is the centre of array
column ``u``, so the mirror of a crop of width ``size`` maps ``u -> size - 1 - u``
(``crops[:, :, ::-1]``), and a mirrored face's point ``i`` is the original's
point ``FLIP68[i]`` (left and right swap).

Parameters: a mirrored face is seen through ``F = diag(-1, 1, 1)`` in camera
space, so its scaled rotation is ``F fR F`` and its object shape the original's
``S F`` re-indexed by ``FLIP68``. The BFM is not exactly symmetric, so no
permutation of coefficients gives that shape: shape and expression are re-fitted
to it by (ridge) least squares, with an object-space shift ``delta`` that moves
into the translation. Both the fit and the mirrored shape are linear in the
coefficients, so the whole re-fit is one affine map ``[alpha', delta] = coef @
alpha + const`` (:func:`mirror_fit`, float64, once per model), which
:func:`mirror_params` applies to numpy arrays (data pipelines, float64) and to
JAX arrays (jitted prediction) alike.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.geometry import params as P

# iBUG-68 left/right mirror: index i of a flipped face is point FLIP68[i] of the
# original. Jaw, brows, nose bottom, eyes, outer and inner lips.
FLIP68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] +
    [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] +
    [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
# The 18 points (landmarks.SEL18 order): brows reversed, eye corner/centre/corner
# of one eye <-> the other eye's (mirrored order), nostrils and mouth corners swap.
FLIP18 = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15])
_PERMS = {68: FLIP68, 18: FLIP18}
_SIGN3 = np.array([-1.0, 1.0, 1.0])           # F = diag(-1, 1, 1)
# The mirror ridge (see mirror_fit): weight of sum(z ** 2) on whitened coefficients.
RIDGE = 1e6


def _xp(a):
  return jnp if isinstance(a, jax.Array) else np


def mirror_points(points, size: int = camera.CROP_SIZE):
  """Crop-pixel points of a face -> those of its mirror image.

  Args:
    points: (..., K, 2), K = 68 (iBUG) or 18 (``landmarks.SEL18``); numpy or JAX.
    size: crop width in pixels.
  Returns:
    (..., K, 2): ``x -> size - 1 - x``, re-indexed so point i is the mirror of
    the original's ``FLIP68[i]`` (``FLIP18[i]``).
  """
  k = points.shape[-2]
  if k not in _PERMS:
    raise ValueError(f'mirror_points: 68 or 18 points, got {k}')
  p = points[..., _PERMS[k], :]
  return _xp(p).stack([size - 1 - p[..., 0], p[..., 1]], axis=-1)


def mirror_mask(mask):
  """(..., K) visibility of K = 68 or 18 points -> the mirrored points' order."""
  k = mask.shape[-1]
  if k not in _PERMS:
    raise ValueError(f'mirror_mask: 68 or 18 points, got {k}')
  return mask[..., _PERMS[k]]


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=['coef', 'const', 'shift'], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class MirrorFit:
  """The parameter mirror of one landmark model, pixel convention and crop size.

  ``coef`` (53, 50), ``const`` (53,): ``[alpha' (50), delta (3)] = coef @ alpha +
  const`` for shape+expression coefficients ``alpha``; ``shift`` (3,): the
  camera-space offset of the pixel mirror (z = 0). A pytree, so jitted code
  takes it as one argument (or constant).
  """
  coef: np.ndarray
  const: np.ndarray
  shift: np.ndarray

  def astype(self, dtype):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), self)


def mirror_fit(model, convention: str, stats: P.ParamStats | None = None, ridge: float = RIDGE,
               size: int = camera.CROP_SIZE) -> MirrorFit:
  """The affine re-fit of :func:`mirror_params` for a landmark model (float64, numpy).

  The fit solves for 50 coefficients and a 3D shift from 68 landmarks, which
  leaves near-null directions: unregularised it reproduces the mirrored
  landmarks to 0.14 px but inflates the coefficients (mean |whitened| 0.62
  against 0.26 in the data; measured on 500 of mb05's AFLW2000-3D fits with the
  real BFM). A ridge on the whitened coefficients (``ridge=1e6``, residuals in
  BFM units) gives 0.17 px (max 0.33) and mean |whitened| 0.31, and the smallest
  drift after two flips (0.18 whitened units; 1e7: 0.27 px, 1e8: 0.61 px).

  Args:
    model: a MorphableModel (its 68 landmarks, ``landmark_model()``, are used).
    convention: the parameters' crop pixel convention ('v1' or 'v2').
    stats: whitening statistics (the ridge's scale); None = no ridge.
    ridge: weight of ``sum(z ** 2)`` on whitened shape/expression coefficients.
    size: crop width in pixels.
  Returns:
    :class:`MirrorFit`, float64.
  """
  m = model.landmark_model()
  u = np.asarray(m.u, np.float64).reshape(-1)                                  # (204,)
  w = np.concatenate([np.asarray(m.w_shp, np.float64),
                      np.asarray(m.w_exp, np.float64)], axis=1)                # (204, 50)
  n_alpha = w.shape[1]
  # Least squares of [alpha, delta] against a 68-point object shape, in whitened
  # units z = alpha / std (delta unpenalised).
  design = np.concatenate([w, np.tile(np.eye(3), (68, 1))], axis=1)           # (204, 53)
  if stats is None or not ridge:
    solve = np.linalg.pinv(design)                                             # (53, 204)
  else:
    scale = np.concatenate([np.asarray(stats.std, np.float64)[P.N_POSE:], np.ones(3)])
    D = design * scale
    reg = float(ridge) * np.diag(np.r_[np.ones(n_alpha), np.zeros(3)])
    solve = scale[:, None] * np.linalg.solve(D.T @ D + reg, D.T)

  def mirrored(flat):  # (204, ...) object shape -> its mirror (S F)[FLIP68], flattened
    s = flat.reshape((68, 3) + flat.shape[1:]) * _SIGN3.reshape((1, 3) + (1,) * (flat.ndim - 1))
    return s[FLIP68].reshape(flat.shape)

  coef = solve @ mirrored(w)                                                   # (53, 50)
  const = solve @ (mirrored(u) - u)                                            # (53,)
  # The pixel mirror u -> size - 1 - u in camera x, y: x' = diag(-1, 1) x + e.
  A, b = camera.pixel_affine_np(convention, size)          # pixels = A @ cam_xy + b
  L, d = np.diag([-1.0, 1.0]), np.array([size - 1.0, 0.0])
  e = np.linalg.solve(A, L @ b + d - b)
  if not np.allclose(np.linalg.solve(A, L @ A), L):
    raise ValueError(f'convention {convention!r}: the pixel map does not keep x and y apart')
  return MirrorFit(coef, const, np.array([e[0], e[1], 0.0]))


def mirror_params(p, fit: MirrorFit):
  """De-whitened parameters of a face -> those of its mirror image.

  Args:
    p: (..., 62) de-whitened parameters; numpy (float64 advised) or JAX.
    fit: :func:`mirror_fit` of the model and convention of ``p`` (JAX arrays,
      e.g. float32, for JAX ``p``).
  Returns:
    (..., 62), same kind of array: rotation ``F fR F``, shape and expression
    re-fitted to the mirrored landmark shape, translation ``F t + shift + F fR F
    delta``. Mirroring twice returns near the start (the re-fit is not exact).
  """
  xp = _xp(p)
  fR, t, a_shp, a_exp = P.split(p)
  fR2 = fR * (_SIGN3[:, None] * _SIGN3[None, :])                              # F fR F
  sol = xp.concatenate([a_shp, a_exp], axis=-1) @ fit.coef.T + fit.const      # (..., 53)
  n_shp = a_shp.shape[-1]
  alpha, delta = sol[..., :-3], sol[..., -3:]
  t2 = t * _SIGN3 + fit.shift + xp.einsum('...ij,...j->...i', fR2, delta)
  pose = xp.concatenate([fR2, t2[..., :, None]], axis=-1)
  pose = pose.reshape(pose.shape[:-2] + (P.N_POSE,))
  return xp.concatenate([pose, alpha[..., :n_shp], alpha[..., n_shp:]], axis=-1)
