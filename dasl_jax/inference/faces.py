"""Faces of one image: detection or given boxes/landmarks -> crops ->
parameters, pose and landmarks in image pixels."""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.geometry import crop as C
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.errors import DaslError

from dasl_jax.inference.predictor import Predictor


# ----------------------------------------------------------------------------
# One image, end to end.


@dataclasses.dataclass
class Face:
  """One predicted face, everything in original-image pixels.

  box (5,) FaceBoxes-like x1, y1, x2, y2, score; roi_box (4,); kind: how the
  face was found; params (62,) de-whitened; pose (3,) yaw, pitch, roll in
  degrees; lms68 (68, 2) image pixels; crop (120, 120, 3) uint8;
  lms68_crop (68, 2); flm: 'detector', 'bootstrap', 'previous_pass' (a 4-channel
  model's refined crop drawn from the pass before) or 'none' (3 channels);
  depth68 (68,) or None: the landmarks' z in image-pixel units, toward the viewer,
  shifted so that the face's 68 points have a minimum of 0 (3DDFA_V2's
  ``similar_transform`` on its sparse landmarks; the meshes' z has the same scale
  and direction but is shifted by the dense mesh's own minimum).
  """
  box: np.ndarray
  roi_box: np.ndarray
  kind: str
  params: np.ndarray
  pose: np.ndarray
  lms68: np.ndarray
  crop: np.ndarray
  lms68_crop: np.ndarray
  flm: str
  depth68: Optional[np.ndarray] = None

  def record(self):
    """JSON-ready: ``landmarks68`` is 68 rows ``[x, y, z]`` (image pixels; z as
    ``depth68``; ``[x, y]`` when there is no depth)."""
    pts = (self.lms68 if self.depth68 is None else
           np.concatenate([self.lms68, np.asarray(self.depth68)[:, None]], 1))
    return {'box': [round(float(v), 2) for v in self.box[:4]],
            'score': round(float(self.box[4]), 4), 'detector': self.kind,
            'roi_box': [round(float(v), 3) for v in self.roi_box],
            'params': [float(v) for v in self.params],
            'yaw': round(float(self.pose[0]), 3), 'pitch': round(float(self.pose[1]), 3),
            'roll': round(float(self.pose[2]), 3), 'flm': self.flm,
            'landmarks68': [[round(float(v), 3) for v in row] for row in pts]}


def _match_landmarks(boxes, lms):
  """For each box, the landmark set whose centre lies inside it (nearest centre)."""
  out = []
  centres = lms.mean(axis=1)
  for b in boxes:
    c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    inside = ((centres[:, 0] >= b[0]) & (centres[:, 0] <= b[2]) &
              (centres[:, 1] >= b[1]) & (centres[:, 1] <= b[3]))
    if not inside.any():
      out.append(None)
      continue
    d = np.where(inside, np.linalg.norm(centres - c, axis=1), np.inf)
    out.append(lms[int(np.argmin(d))])
  return out


# Landmark re-crop passes of a detected face (``--refine``): the crop is cut again
# around the previous pass's 68 landmarks by 3DDFA's landmark rule, the rule the
# AFLW2000-3D benchmark crops and the video tracker use. On the 2,000 full AFLW2000-3D
# images with FaceBoxes one pass took the mean-of-bins NME from 4.43 to 3.97 against
# 3.71 on the ground-truth crops, a second pass only to 3.95
# (experiments/results/aflw2000_full_images.md); one pass doubles the regression cost.
DEFAULT_REFINE = 1


def predict_image(predictor: Predictor, image, detector=None, boxes=None, lms68=None,
                  min_face=0, name='image', refine=DEFAULT_REFINE) -> tuple:
  """Faces of one image.

  The faces come from, in order: ``boxes`` (FaceBoxes-like, the ROI by
  3DDFA_V2's rule); else ``lms68`` (the ROI by 3DDFA v1's landmark rule);
  else ``detector``. Detector landmarks (``lms68``), when given, also feed the
  FLM of a 4-channel model. Faces found by box (``boxes`` or ``detector``) are
  then cut again ``refine`` times around their predicted landmarks by the
  landmark rule and predicted again (:data:`DEFAULT_REFINE`).

  Args:
    image: (H, W, 3) uint8 BGR.
    detector: anything with ``detections(image) -> list of detect.Detection``
      (:func:`make_detector`: FaceBoxes or Haar), or None.
    boxes: (F, 5) or None; lms68: (F, 68, 2) image pixels or None.
    min_face: skip faces whose box side (mean of width and height) is smaller.
    refine: landmark re-crop passes of faces found by box (0: off).
  Returns:
    (list of :class:`Face`, list of messages about skipped faces).
  """
  if refine < 0:
    raise DaslError(f'--refine must be >= 0, got {refine}')
  messages = []
  face_lms = None
  by_box = True
  if boxes is not None and len(boxes):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
    kinds = ['file'] * len(boxes)
    face_lms = _match_landmarks(boxes, lms68) if lms68 is not None else None
    rois = C.roi_box_from_bbox(boxes)
  elif lms68 is not None and len(lms68):
    face_lms = list(np.asarray(lms68, np.float64))
    rois = C.roi_box_from_landmarks(np.asarray(lms68))
    lo, hi = np.min(lms68, axis=1), np.max(lms68, axis=1)
    boxes = np.concatenate([lo, hi, np.ones((len(lo), 1))], 1)
    kinds = ['landmarks'] * len(boxes)
    by_box = False
  elif detector is not None:
    dets = detector.detections(image)
    boxes = np.asarray([d.box for d in dets]).reshape(-1, 5)
    kinds = [d.kind for d in dets]
    rois = C.roi_box_from_bbox(boxes) if len(boxes) else np.zeros((0, 4))
  else:
    boxes, kinds, rois = np.zeros((0, 5)), [], np.zeros((0, 4))
  keep = []
  for i, b in enumerate(boxes):
    side = ((b[2] - b[0]) + (b[3] - b[1])) / 2
    if side < min_face:
      messages.append(f'{name}: face {i} at {np.round(b[:4]).astype(int).tolist()} is '
                      f'{side:.0f} px, below --min_face {min_face}: skipped')
    else:
      keep.append(i)
  if not keep:
    return [], messages
  rois = np.asarray(rois)[keep]
  boxes = boxes[keep]
  kinds = [kinds[i] for i in keep]
  crop_lms = None
  flm = 'none' if predictor.in_channels == 3 else 'bootstrap'
  if face_lms is not None and predictor.in_channels == 4:
    sel = [face_lms[i] for i in keep]
    if all(s is not None for s in sel):
      crop_lms = np.asarray(camera.image_to_crop(np.stack(sel).astype(np.float32), rois))
      flm = 'detector'
    elif any(s is not None for s in sel):
      messages.append(f'{name}: some boxes have no matching landmarks; '
                      'all faces of this image use the self-bootstrapped FLM')
  crops, out, img_lms = _predict_rois(predictor, image, rois, crop_lms)
  for _ in range(refine if by_box else 0):
    rois = C.roi_box_from_landmarks(img_lms)
    # A 4-channel model's FLM: the previous pass's landmarks in the new crop.
    crop_lms = (np.asarray(camera.image_to_crop(img_lms.astype(np.float32), rois))
                if predictor.in_channels == 4 else None)
    crops, out, img_lms = _predict_rois(predictor, image, rois, crop_lms)
    if predictor.in_channels == 4:
      flm = 'previous_pass'
  poses = out['pose']
  depth = landmark_depth(predictor.lm_model, out['params'], rois, predictor.convention)
  faces = [Face(box=boxes[i], roi_box=rois[i], kind=kinds[i], params=out['params'][i],
                pose=poses[i], lms68=img_lms[i], crop=crops[i], lms68_crop=out['lms68'][i],
                flm=flm, depth68=depth[i]) for i in range(len(rois))]
  return faces, messages


def landmark_depth(lm_model, params, rois, convention):
  """The 68 landmarks' depth in image-pixel units (see :class:`Face` ``depth68``).

  Args:
    lm_model: 68-row morphable model; params: (F, 62) de-whitened; rois: (F, 4).
  Returns:
    (F, 68) float32: camera-space z times the mean crop -> image scale
    (``camera.crop_to_image_3d``), minus each face's minimum.
  """
  params = np.asarray(params, np.float32).reshape(-1, 62)
  if not len(params):
    return np.zeros((0, 68), np.float32)
  crop3d = np.asarray(mm.vertices2d(lm_model, params, convention))
  z = np.asarray(camera.crop_to_image_3d(crop3d, np.asarray(rois, np.float32)))[..., 2]
  return (z - z.min(axis=1, keepdims=True)).astype(np.float32)


def _predict_rois(predictor, image, rois, crop_lms=None):
  """Crops of ``rois`` (F, 4) -> (crops, the predictor's outputs, (F, 68, 2) image landmarks)."""
  crops = C.crop_faces(image, rois)
  out = predictor.predict_crops(crops, crop_lms)
  return crops, out, np.asarray(camera.crop_to_image(out['lms68'], rois), np.float64)
