"""Faces of one image: detection or given boxes/landmarks -> crops ->
parameters, pose and landmarks in image pixels."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.geometry import crop as C
from dasl_jax.inference import detect

from dasl_jax.inference.predictor import Predictor


# ----------------------------------------------------------------------------
# One image, end to end.


@dataclasses.dataclass
class Face:
  """One predicted face, everything in original-image pixels.

  box (5,) FaceBoxes-like x1, y1, x2, y2, score; roi_box (4,); kind: how the
  face was found; params (62,) de-whitened; pose (3,) yaw, pitch, roll in
  degrees; lms68 (68, 2) image pixels; crop (120, 120, 3) uint8;
  lms68_crop (68, 2); flm: 'detector', 'bootstrap' or 'none' (3 channels).
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

  def record(self):
    return {'box': [round(float(v), 2) for v in self.box[:4]],
            'score': round(float(self.box[4]), 4), 'detector': self.kind,
            'roi_box': [round(float(v), 3) for v in self.roi_box],
            'params': [float(v) for v in self.params],
            'yaw': round(float(self.pose[0]), 3), 'pitch': round(float(self.pose[1]), 3),
            'roll': round(float(self.pose[2]), 3), 'flm': self.flm,
            'landmarks68': [[round(float(x), 3), round(float(y), 3)] for x, y in self.lms68]}


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


def predict_image(predictor: Predictor, image, detector=None, boxes=None, lms68=None,
                  min_face=0, name='image') -> tuple:
  """Faces of one image.

  The faces come from, in order: ``boxes`` (FaceBoxes-like, the ROI by
  3DDFA_V2's rule); else ``lms68`` (the ROI by 3DDFA v1's landmark rule);
  else ``detector``. Detector landmarks (``lms68``), when given, also feed the
  FLM of a 4-channel model.

  Args:
    image: (H, W, 3) uint8 BGR.
    detector: anything with ``detections(image) -> list of detect.Detection``
      (:func:`make_detector`: FaceBoxes or Haar), or None.
    boxes: (F, 5) or None; lms68: (F, 68, 2) image pixels or None.
    min_face: skip faces whose box side (mean of width and height) is smaller.
  Returns:
    (list of :class:`Face`, list of messages about skipped faces).
  """
  messages = []
  face_lms = None
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
  crops = C.crop_faces(image, rois)
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
  out = predictor.predict_crops(crops, crop_lms)
  img_lms = np.asarray(camera.crop_to_image(out['lms68'], rois))
  poses = out['pose']
  faces = [Face(box=boxes[i], roi_box=rois[i], kind=kinds[i], params=out['params'][i],
                pose=poses[i], lms68=img_lms[i], crop=crops[i], lms68_crop=out['lms68'][i],
                flm=flm) for i in range(len(rois))]
  return faces, messages


