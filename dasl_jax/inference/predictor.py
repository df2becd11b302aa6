"""A restored regressor on 120x120 crops (the prediction core with
interactive batching) and dense vertices."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.io import checkpoint as ckpt
from dasl_jax.geometry import landmarks as L
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.inference import core
from dasl_jax.errors import DaslError


# ----------------------------------------------------------------------------
# The regressor on crops (the prediction core, ``predict_batch``, with
# interactive batching).


class Predictor:
  """A restored regressor with its whitening, landmark model and convention.

  Args:
    restored: ``dasl_jax.io.checkpoint.restore(...)`` output.
    landmark_model: 68-row morphable model for the landmarks.
    batch_size: the largest batch one call runs (bigger inputs are split;
      smaller ones are padded to a power of two).
    bootstrap_iters: forward passes of the self-bootstrapped FLM (4-channel
      models without detector landmarks): the first from the mean face's
      landmarks, each next one from the previous prediction's.
    tta: test-time averaging, 'none' or 'flip' (each crop and its mirror
      image; the mirrored prediction mapped back and averaged:
      ``core.forward``). 'flip' runs twice the batch.
  """
  backend = 'jax'

  def __init__(self, restored, landmark_model, batch_size=32, bootstrap_iters=2, tta='none'):
    self.module = restored.module
    self.variables = jax.tree_util.tree_map(jnp.asarray, restored.variables)
    self.config = restored.model_config
    self.stats = restored.param_stats
    self.convention = self.config.convention
    self.lm_model = landmark_model.landmark_model()
    self.batch_size = batch_size
    if bootstrap_iters < 1:
      raise DaslError(f'--bootstrap_iters must be >= 1, got {bootstrap_iters}')
    self.bootstrap_iters = bootstrap_iters
    if tta not in core.TTA:
      raise DaslError(f'--tta must be one of {", ".join(core.TTA)}, got {tta!r}')
    self.tta = tta
    self.flip = core.mirror_fit(tta, self.stats, self.lm_model, self.convention)
    # The mean face under the mean pose: the FLM a 4-channel model starts from.
    self.mean_lms68 = np.asarray(mm.landmarks2d(self.lm_model, jnp.asarray(self.stats.mean),
                                                self.convention))
    self._fns = {}

  @classmethod
  def from_parts(cls, module, variables, model_config, param_stats, landmark_model, **kw):
    """A predictor from a network and its constants (e.g. a training run's state)."""
    return cls(ckpt.Restored(module, variables, model_config, param_stats, None),
               landmark_model, **kw)

  @property
  def in_channels(self):
    return self.config.in_channels

  def describe(self):
    """One phrase for the console and the JSON: runtime and version."""
    return f'jax {jax.__version__} ({jax.default_backend()})'

  def predict_many(self, crops, n, points18=None, iters=None, batch_size=None,
                   progress=True, desc='predict'):
    """Many crops read batch by batch (benchmarks): fixed-size batches, split over
    host devices when there are several.

    Args:
      crops: index array (b,) -> (b, 120, 120, 3) uint8, or an (n, ...) array.
      points18: optional (n, 18, 2) FLM points (4-channel models: one pass);
        without them a 4-channel model bootstraps (``iters`` passes).
    Returns:
      dict as :meth:`predict_crops`.
    """
    passes = 0
    if self.in_channels == 4 and points18 is None:
      passes = self.bootstrap_iters if iters is None else iters
    return core.predict_crops(self._fn(passes), self.variables, self.stats, self.lm_model,
                              crops, n, points18, None, batch_size or self.batch_size,
                              progress=progress, desc=desc)

  def _fn(self, iters):
    if iters not in self._fns:
      self._fns[iters] = core.make_forward(self.module, self.in_channels, self.convention, iters,
                                           self.flip)
    return self._fns[iters]

  def predict_crops(self, crops, lms68=None, iters=None, points18=None, mask18=None):
    """Run the regressor on crops, in batches.

    Args:
      crops: (F, 120, 120, 3) uint8 BGR.
      lms68: optional (F, 68, 2) detector landmarks in crop pixels (FLM input of
        4-channel models: one pass). Without them a 4-channel model bootstraps.
      iters: bootstrap passes (default: the predictor's).
      points18: optional (F, 18, 2) FLM points given directly (instead of lms68).
      mask18: optional (F, 18) visibility of ``points18`` (0: not drawn).
    Returns:
      dict of numpy arrays: ``whitened`` (F, 62), ``params`` (F, 62) de-whitened,
      ``lms68`` (F, 68, 2) crop pixels, ``pose`` (F, 3) yaw, pitch, roll degrees.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (camera.CROP_SIZE, camera.CROP_SIZE, 3):
      raise DaslError(f'crops: expected (F, 120, 120, 3) uint8, got {crops.shape}')
    if points18 is None and lms68 is not None:
      points18 = L.select18_np(np.asarray(lms68, np.float32))
      mask18 = None
    passes = 0
    if self.in_channels == 4 and points18 is None:
      passes = self.bootstrap_iters if iters is None else iters
    return core.predict_crops(self._fn(passes), self.variables, self.stats, self.lm_model,
                              crops, len(crops), points18, mask18, self.batch_size, pad='pow2')


def dense_vertices(model: mm.MorphableModel, params, convention):
  """Dense vertices in crop pixels with depth: (F, 62) -> (F, N, 3)."""
  return np.asarray(_dense_jit(model, jnp.asarray(params, jnp.float32), convention))


@functools.partial(jax.jit, static_argnames=('convention',))
def _dense_jit(model, params, convention):
  return mm.vertices2d(model, params, convention)


def to_image_space(verts_crop, roi_box, size=camera.CROP_SIZE):
  """Crop-pixel vertices (x, y, z) -> image pixels, z scaled like x and y.

  3DDFA_V2's ``similar_transform``: x, y through the ROI box; z times the mean
  crop->image scale, shifted so its minimum is 0 (the pixel convention's
  offsets are already in ``vertices2d``'s x, y).

  Args:
    verts_crop: (N, 3); roi_box: (4,).
  Returns:
    (N, 3) float32.
  """
  v = np.asarray(camera.crop_to_image_3d(np.asarray(verts_crop, np.float64),
                                        np.asarray(roi_box, np.float64), size))
  return np.concatenate([v[:, :2], v[:, 2:] - v[:, 2:].min()], 1).astype(np.float32)


