"""Running a model: the prediction core (core), the photo/video predictor
(predictor), faces in images (faces), detectors (detect, faceboxes), the
command's runner (runner), export.

The user-facing names are re-exported here: ``inference.Predictor``,
``inference.predict_image``, ``inference.Runner``, ``inference.face_models``,
``inference.load_image``.
"""
from dasl_jax.face_model.bfm import (  # noqa: F401
    FaceModels, checkpoint_face_model, face_models, load_bfm_models)
from dasl_jax.inference.faces import Face, predict_image  # noqa: F401
from dasl_jax.inference.predictor import (  # noqa: F401
    Predictor, dense_vertices, to_image_space)
from dasl_jax.inference.runner import DETECTORS, Runner, make_detector  # noqa: F401
from dasl_jax.io.input_files import list_inputs  # noqa: F401
from dasl_jax.io.media import (  # noqa: F401
    is_video, load_image, video_fps, video_frames)
