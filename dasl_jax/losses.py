"""2DASL's six losses and 3DDFA's VDC, as pure functions on arrays.

Notation: networks output whitened parameters ``pw``
(B, 62); ``stats`` de-whitens them; ``L3`` gives the 68 3D landmarks in camera
space (pixels in x and y, before the y-flip), ``proj`` the crop pixels.

Reductions are chosen so that each loss is a mean over the batch, and every
function is differentiable in its prediction arguments except where noted.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dasl_jax.geometry import camera
from dasl_jax.geometry import landmarks as lm
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.face_model import schemes
from dasl_jax.geometry import params as P

# 3DDFA's scale on the shape/expression weights (``magic_number`` in its
# wpdc_loss.py): |d alpha| * ||basis column|| is a displacement in object units,
# while the pose terms measure displacements after the scaled rotation (pixels);
# 0.00057 is a typical scale f of fR, which puts both on the same footing. Without
# it the shape terms dominate by ~1/f and WPDC stops ranking pose first.
WPDC_SHAPE_SCALE = 0.00057339936
WPDC_EPS = 1e-6  # 3DDFA adds it before the per-sample normalisation.


def dewhiten(pw, mean, std):
  """(..., 62) whitened -> (..., 62) real parameters."""
  return jnp.asarray(pw) * std + mean


def landmarks_from_whitened(pw, model68, mean, std, convention):
  """Whitened parameters -> 68 landmarks in camera space and in crop pixels.

  Args:
    pw: (B, 62) whitened parameters.
    model68: MorphableModel restricted to the 68 landmarks (``landmark_model()``).
    mean, std: (62,) whitening statistics.
    convention: 'v1' or 'v2' pixel convention.
  Returns:
    l3 (B, 68, 3) camera-space landmarks, l2 (B, 68, 2) crop pixels.
  """
  p = dewhiten(pw, mean, std)
  l3 = mm.landmarks3d(model68, p)
  return l3, camera.to_crop_pixels(l3, convention)


def _wpdc_rows(model, key, n_resample):
  """Row indices (3V,) of the vertices WPDC measures: 68 landmarks + a sample."""
  n_vert = model.u.shape[0] // 3
  kp = jnp.asarray(model.keypoints, jnp.int32)
  if n_resample <= 0:
    idx = kp
  elif n_vert == 68:
    # Only the landmark basis is at hand: sample among the 68 (with replacement,
    # as there are fewer than 132).
    idx = jnp.concatenate([kp, jax.random.choice(key, kp, (n_resample,), replace=True)])
  else:
    idx = jnp.concatenate(
        [kp, jax.random.choice(key, n_vert, (n_resample,), replace=False).astype(jnp.int32)])
  return (3 * idx[:, None] + jnp.arange(3)[None]).reshape(-1), idx.shape[0]


def wpdc_weights(pw, target_w, model, mean, std, key, n_resample=132,
                 shape_scale=WPDC_SHAPE_SCALE):
  """3DDFA's WPDC weights (no gradient).

  Pose entries: ``|dp| * ||ground-truth vertex coordinate d||`` for the entries
  multiplying coordinate d (fR[:, d]), ``|dp| * sqrt(V)`` for tx, ty; shape and
  expression: ``shape_scale * |dp| * ||basis column||``; basis and vertices
  restricted to the 68 landmarks plus ``n_resample`` random vertices. Each
  row is divided by its maximum (after adding 1e-6) and the tz weight is 0.

  Args:
    pw, target_w: (B, 62) predicted and ground-truth whitened parameters.
    model: MorphableModel, dense (samples vertices) or 68-landmark (samples among them).
    mean, std: (62,) whitening statistics.
    key: PRNG key for the vertex sample.
  Returns:
    (B, 62) weights in [0, 1].
  """
  pw = jax.lax.stop_gradient(pw)
  target_w = jax.lax.stop_gradient(target_w)
  rows, n_v = _wpdc_rows(model, key, n_resample)
  u, w_shp, w_exp = model.u[rows], model.w_shp[rows], model.w_exp[rows]
  p, pg = dewhiten(pw, mean, std), dewhiten(target_w, mean, std)
  _, _, a_shp, a_exp = P.split(pg)
  verts = (u + a_shp @ w_shp.T + a_exp @ w_exp.T).reshape(pg.shape[0], n_v, 3)
  coord_norm = jnp.linalg.norm(verts, axis=1)  # (B, 3): norm of each coordinate row
  dp = jnp.abs(p - pg)
  # fR[i, d] is entry 4 i + d; column 3 is the translation.
  pose_scale = jnp.concatenate(
      [coord_norm, jnp.full_like(coord_norm[:, :1], math.sqrt(n_v))], axis=1)  # (B, 4)
  pose_w = dp[:, :12] * jnp.tile(pose_scale, (1, 3)) + WPDC_EPS
  col_norm = jnp.linalg.norm(jnp.concatenate([w_shp, w_exp], axis=1), axis=0)  # (50,)
  se_w = shape_scale * dp[:, 12:] * col_norm + WPDC_EPS
  w = jnp.concatenate([pose_w, se_w], axis=1)
  w = w.at[:, P.TZ_INDEX].set(0.0)
  w = w / jnp.max(w, axis=1, keepdims=True)
  return jax.lax.stop_gradient(w)


def wpdc(pw, target_w, model, mean, std, key, n_resample=132,
         shape_scale=WPDC_SHAPE_SCALE):
  """L_3d: ``mean(w * (pw - target_w)^2)`` on whitened parameters, w from :func:`wpdc_weights`.

  Args:
    pw: (B, 62) predicted whitened parameters (gradient flows here only).
    target_w: (B, 62) ground truth, whitened.
  Returns:
    scalar.
  """
  w = wpdc_weights(pw, target_w, model, mean, std, key, n_resample, shape_scale)
  return jnp.mean(w * (pw - target_w) ** 2)


def vdc(pw, target_w, model, mean, std):
  """3DDFA's vertex distance cost: mean squared camera-space vertex error.

  The prediction's z translation is replaced by the ground truth's (it cannot be
  observed under weak perspective), as in 3DDFA.

  Args:
    pw, target_w: (B, 62) whitened. model: MorphableModel (N vertices).
  Returns:
    scalar, mean over B * N * 3.
  """
  p, pg = dewhiten(pw, mean, std), dewhiten(target_w, mean, std)
  p = p.at[:, P.TZ_INDEX].set(pg[:, P.TZ_INDEX])
  return jnp.mean((mm.vertices(model, p) - mm.vertices(model, pg)) ** 2)


def weighted_points_2d(pred18, target18, mask18, weights=lm.SEL18_WEIGHTS, weight_power=2,
                       robust=0.0):
  """Masked, weighted squared distance of 18 2D points.

  ``sum(m * w^p * rho(||pred - target||^2)) / (2 * sum(m))`` over the batch: with every
  point visible, w = 1 and ``robust=0`` this is the mean squared error over all
  coordinates (PyTorch's ``mse_loss``). ``weight_power=2`` reproduces the released code,
  which multiplies both sides by w before a squared error, so the effective
  weights on the squared error are 4, 1 and 0.25;
  ``weight_power=1`` uses the paper's weights on the squared error directly.
  ``robust`` > 0 (pixels) replaces the squared distance ``e`` by the pseudo-Huber
  ``2 c^2 (sqrt(1 + e / c^2) - 1)``: the same for errors well under ``c``, growing
  like ``2 c |d|`` beyond, so a mislabelled point pulls with a bounded force.

  Args:
    pred18, target18: (B, K, 2) crop pixels (K = 18 with the default weights).
    mask18: (B, K) 1 for visible target points (or soft weights in [0, 1]).
    weights: (K,) per-point weights.
  Returns:
    scalar.
  """
  w = jnp.asarray(weights, pred18.dtype) ** weight_power
  d2 = jnp.sum((pred18 - target18) ** 2, axis=-1)  # (B, K)
  if robust:
    c2 = jnp.asarray(robust, pred18.dtype) ** 2
    d2 = 2.0 * c2 * (jnp.sqrt(1.0 + d2 / c2) - 1.0)
  m = jnp.asarray(mask18, pred18.dtype)
  return jnp.sum(m * w * d2) / (2.0 * jnp.maximum(jnp.sum(m), 1.0))


def wild_points_2d(pw, pred68_2d, mean, std, combine=None, offsets=None):
  """The 18 wild-label points of a prediction, by the labels' scheme.

  ``face_model.schemes``: ``combine @ 68 points + fR @ d`` in crop pixels. Without a
  scheme (``combine`` None) this is ``landmarks.select18`` (iBUG's definitions).

  Args:
    pw: (B, 62) whitened parameters (for fR); pred68_2d: (B, 68, 2) crop pixels.
    combine: (18, 68) or None; offsets: (18, 3) model-frame offsets or None.
  Returns:
    (B, 18, 2) crop pixels.
  """
  if combine is None:
    return lm.select18(pred68_2d)
  fR = P.split(dewhiten(pw, mean, std))[0]
  d = jnp.zeros((combine.shape[0], 3), pred68_2d.dtype) if offsets is None else offsets
  return schemes.points2d(pred68_2d, fR, combine, d)


def landmark_2d_consistency(pred68_2d, detector18, mask18, weight_power=2, pred18=None,
                            robust=0.0):
  """L_2d_con: ``sel18(proj(L3(p_hat)))`` against the detector's 18 points.

  Args:
    pred68_2d: (B, 68, 2) predicted landmarks in crop pixels.
    detector18: (B, 18, 2) detector landmarks (crop pixels); mask18: (B, 18).
    pred18: (B, 18, 2) the prediction's points by the labels' scheme
      (:func:`wild_points_2d`); default ``select18(pred68_2d)``.
  Returns:
    scalar.
  """
  pred18 = lm.select18(pred68_2d) if pred18 is None else pred18
  return weighted_points_2d(pred18, detector18, mask18, weight_power=weight_power,
                            robust=robust)


def landmark_3d_consistency(l3_second, l3_first):
  """L_3d_con: mean squared distance of the second pass's 68 3D landmarks to the first's.

  Args:
    l3_second, l3_first: (B, 68, 3) camera-space landmarks.
  Returns:
    scalar, mean over B * 68 * 3.
  """
  return jnp.mean((l3_second - l3_first) ** 2)


def cycle_consistency(pred68_2d_second, detector18, mask18, weight_power=2, pred18=None,
                      robust=0.0):
  """L_cyc: the second pass's projected landmarks against the original detector points.

  Args:
    pred68_2d_second: (B, 68, 2) crop pixels from ``p_hat2``.
    detector18: (B, 18, 2); mask18: (B, 18).
    pred18: the second pass's points by the labels' scheme (default ``select18``).
  Returns:
    scalar.
  """
  pred18 = lm.select18(pred68_2d_second) if pred18 is None else pred18
  return weighted_points_2d(pred18, detector18, mask18, weight_power=weight_power,
                            robust=robust)


def self_critic_generator(fake_logits):
  """L_sc (regressor side): BCE of the critic's logits on (z(I_wild), p_hat) against 'real'.

  Args:
    fake_logits: (B,). Returns: scalar ``mean(softplus(-logits))``.
  """
  return jnp.mean(jax.nn.softplus(-fake_logits))


def critic_loss(real_logits, fake_logits):
  """L_critic: standard GAN BCE with logits, real -> 1, fake -> 0.

  Args:
    real_logits: (B1,) on (z(I_3d), p_star); fake_logits: (B2,) on (z(I_wild), p_hat).
  Returns:
    scalar ``mean(softplus(-real)) + mean(softplus(fake))``.
  """
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
