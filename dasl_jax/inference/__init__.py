"""Running a model: the prediction core (core), the photo/video predictor
(predictor), faces in images (faces), detectors (detect, faceboxes), the
command's runner (runner), export.

The user-facing names are re-exported here: ``inference.Predictor``,
``inference.predict_image``, ``inference.Runner``, ``inference.face_models``,
``inference.load_image``. They are imported on first use (PEP 562), so that
training, which only needs ``inference.core``, does not pay for the runner's
drawing and video imports (~0.4 s of every start or restart).
"""
import importlib

_EXPORTS = {
    'dasl_jax.face_model.bfm': ('FaceModels', 'checkpoint_face_model', 'face_models',
                                'load_bfm_models'),
    'dasl_jax.inference.faces': ('Face', 'predict_image'),
    'dasl_jax.inference.predictor': ('Predictor', 'dense_vertices', 'to_image_space'),
    'dasl_jax.inference.runner': ('DETECTORS', 'Runner', 'make_detector'),
    'dasl_jax.io.input_files': ('list_inputs',),
    'dasl_jax.io.media': ('is_video', 'load_image', 'video_fps', 'video_frames'),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
  module = _WHERE.get(name)
  if module is None:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value  # later lookups skip this function
  return value


def __dir__():
  return sorted(set(globals()) | set(_WHERE))
