"""Per-example augmentation in numpy: colour jitter, shift/scale, horizontal flip.

Pixel coordinates follow OpenCV: crop pixel ``(u, v)`` is the centre of array
column ``u``, row ``v``, so a horizontal flip maps ``u -> size - 1 - u`` and
``cv2.warpAffine`` moves image content exactly as :func:`warp_points` moves
landmarks.

3D-annotated examples also get their parameters changed to match the image:
the pose follows the pixel warp (through ``camera.to_crop_pixels``'s y-flip,
derived in ``camera.pixel_affine_np``), and a flip mirrors the parameters and
re-indexes the landmarks (``geometry.mirror``, the one mirror definition).

Everything is deterministic given a ``np.random.Generator``; the pipeline seeds
one per example from the run seed and the example's position.
"""
from __future__ import annotations

import cv2
import numpy as np

from dasl_jax.geometry import params as P
from dasl_jax.geometry import camera
from dasl_jax.geometry import mirror as MIR
from dasl_jax.data import readers as R

SIZE = R.SIZE

# ----------------------------------------------------------------------------
# Geometry.


def affine_matrix(scale=1.0, shift=(0.0, 0.0), flip=False, size=SIZE):
  """Pixel map (2, 3) ``u' = M[:, :2] @ u + M[:, 2]``: optional flip first, then a
  scale about the crop centre and a shift (pixels)."""
  c = (size - 1) / 2.0
  fx = -1.0 if flip else 1.0
  # flip: u -> 2c - u; then scale about c; then shift.
  lin = np.diag([scale * fx, scale])
  off = np.array([c, c]) - lin @ np.array([c, c]) + np.asarray(shift, np.float64)
  return np.concatenate([lin, off[:, None]], axis=1)


def warp_points(points, M):
  """(..., K, 2) points through a (2, 3) pixel map."""
  return (np.asarray(points, np.float64) @ M[:, :2].T + M[:, 2]).astype(np.float32)


def warp_image(image, M, size=SIZE):
  """uint8 (H, W, 3) through a (2, 3) pixel map (bilinear, edges replicated)."""
  if np.allclose(M, affine_matrix(size=size)):
    return image
  return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)


class ParamWarper:
  """Changes de-whitened parameters so their landmarks follow a pixel map.

  A flip mirrors the parameters (``geometry.mirror.mirror_params``: rotation
  mirrored, shape and expression re-fitted to the mirrored landmarks with a
  ridge on the whitened coefficients); a scale and shift move the pose.

  Args:
    model: a MorphableModel (its 68 landmarks are used for the mirror fit).
    convention: the labels' crop pixel convention.
    stats: ParamStats (whitening scale of the ridge); None = no ridge.
    ridge: see ``geometry.mirror.mirror_fit``.
  """

  def __init__(self, model, convention, stats=None, ridge=MIR.RIDGE):
    self.convention = convention
    self.A, self.b = camera.pixel_affine_np(convention)   # pixels = A @ cam_xy + b
    self.A_inv = np.linalg.inv(self.A)
    self.fit = MIR.mirror_fit(model, convention, stats, ridge, SIZE)

  def _camera_map(self, M):
    """Pixel map (2, 3) -> camera-space xy map: ``x' = Lc @ x + e``."""
    L, d = M[:, :2], M[:, 2]
    Lc = self.A_inv @ L @ self.A
    e = self.A_inv @ (L @ self.b + d - self.b)
    return Lc, e

  def mirror(self, p):
    """Parameters (..., 62) of the horizontally flipped crop (``affine_matrix(flip=True)``)."""
    return MIR.mirror_params(np.asarray(p, np.float64), self.fit)

  def scale_shift(self, p, M):
    """Apply a flip-free pixel map (scale s, shift) to (62,) parameters."""
    p = np.asarray(p, np.float64)
    fR, t, a_shp, a_exp = P.split(p)
    Lc, e = self._camera_map(M)
    s = Lc[0, 0]
    t2 = np.array([s * t[0] + e[0], s * t[1] + e[1], s * t[2]])
    return _join(s * fR, t2, a_shp, a_exp)


def _join(fR, t, a_shp, a_exp):
  """numpy twin of params.join for one example: -> (62,)."""
  pose = np.concatenate([fR, t[:, None]], axis=1).reshape(12)
  return np.concatenate([pose, a_shp, a_exp])


# ----------------------------------------------------------------------------
# Colour.


def color_jitter(image, brightness=0.0, contrast=1.0, saturation=1.0):
  """uint8 BGR (H, W, 3) -> uint8: ``grey + s * (x - grey)``, then contrast
  about the mean, then ``+ brightness * 255``.

  The three steps are one affine map of (x, grey), so they run as one OpenCV
  ``addWeighted`` (rounding to nearest, saturating to 0..255): 5x faster than the
  float32 numpy form (:func:`color_jitter_reference`, benchmarks/README.md), from
  which a value differs by at most 1 (float rounding at .5; about one value in 10^6).
  """
  grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
  # The mean of grey + s (x - grey), from the means of x and grey (linear).
  m = (saturation * float(image.mean(dtype=np.float64))
       + (1.0 - saturation) * float(grey.mean(dtype=np.float64)))
  grey3 = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
  return cv2.addWeighted(image, contrast * saturation, grey3, contrast * (1.0 - saturation),
                         (1.0 - contrast) * m + brightness * 255.0)


def color_jitter_reference(image, brightness=0.0, contrast=1.0, saturation=1.0):
  """:func:`color_jitter` step by step in float32 numpy (the definition; tests)."""
  x = image.astype(np.float32)
  if saturation != 1.0:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)[..., None]
    x = grey + saturation * (x - grey)
  if contrast != 1.0:
    m = x.mean()
    x = m + contrast * (x - m)
  if brightness != 0.0:
    x = x + brightness * 255.0
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------
# One example.


def sample(rng: np.random.Generator, cfg):
  """Draw one example's augmentation from ``cfg`` (config.augment)."""
  d = {
      'flip': bool(rng.random() < cfg.flip),
      'scale': float(np.exp(rng.uniform(-cfg.max_scale, cfg.max_scale))),
      'shift': rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * SIZE,
      'brightness': float(rng.uniform(-cfg.brightness, cfg.brightness)),
      'contrast': float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
      'saturation': float(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)),
  }
  return d


def apply(example, draw, warper: ParamWarper | None = None, stats=None):
  """Apply one draw (from :func:`sample`) to an example dict; returns a new dict.

  ``params`` (whitened) need ``warper`` and ``stats``; ``lms68``, ``points18``
  and ``mask18`` are moved and re-indexed with the image.
  """
  out = dict(example)
  flip = draw['flip']
  M_ss = affine_matrix(scale=draw['scale'], shift=draw['shift'])
  # Composite map: flip first, then scale/shift.
  M = affine_matrix(scale=draw['scale'], shift=draw['shift'], flip=flip)
  img = warp_image(example['image'], M)
  out['image'] = color_jitter(img, draw['brightness'], draw['contrast'], draw['saturation'])
  p18, m18 = example['points18'], example['mask18']
  if flip:
    p18, m18 = p18[MIR.FLIP18], m18[MIR.FLIP18]
  out['points18'] = np.where(m18[:, None] > 0, warp_points(p18, M), 0.0).astype(np.float32)
  out['mask18'] = np.asarray(m18, np.float32)
  if 'flm18' in example:  # FLM points of the same 18 (data/wild_scheme.py)
    f18 = example['flm18'][MIR.FLIP18] if flip else example['flm18']
    out['flm18'] = np.where(m18[:, None] > 0, warp_points(f18, M), 0.0).astype(np.float32)
  if 'lms68' in example:
    l68 = example['lms68'][MIR.FLIP68] if flip else example['lms68']
    out['lms68'] = warp_points(l68, M)
  if 'params' in example:
    if warper is None or stats is None:
      raise ValueError('augmenting params needs a ParamWarper and ParamStats')
    p = stats.dewhiten(np.asarray(example['params'], np.float64))
    if flip:
      p = warper.mirror(p)
    p = warper.scale_shift(p, M_ss)
    out['params'] = stats.whiten(p).astype(np.float32)
  return out


def augment(example, rng, cfg, warper=None, stats=None):
  """Sample and apply one augmentation (``cfg``: config.augment)."""
  return apply(example, sample(rng, cfg), warper, stats)
