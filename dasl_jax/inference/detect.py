"""Face boxes: an offline Haar-cascade detector, NMS, and box / landmark files.

The default detector is FaceBoxes (:mod:`dasl_jax.inference.faceboxes`, needs its
weights file); the Haar detector here needs nothing but OpenCV.

The detector needs nothing but OpenCV 4.x, whose wheels ship the cascades in
``cv2.data.haarcascades``: the frontal cascade, and the profile cascade run on
the image and on its mirror (it only knows one facing direction), merged with
non-maximum suppression. Haar boxes are tighter than the FaceBoxes boxes that
3DDFA_V2's crop rule (``crop.roi_box_from_bbox``) was tuned for, so each
cascade's boxes are rescaled and shifted into FaceBoxes-like boxes with
constants measured on AFLW2000-3D (:data:`CALIBRATION`, see
:func:`calibrate`). Boxes from a file (``--boxes``) are taken as they are.

A box row is ``x1, y1, x2, y2, score`` in image pixels (float).
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from dasl_jax.errors import DaslError
from dasl_jax.io.landmark_files import is_number, read_landmark_file

# Haar box -> FaceBoxes-like box: side * scale, centre + (dx, dy) * side. The
# profile cascade's dx is for faces turned like its training faces; mirrored
# detections use -dx. Measured by `calibrate` on the 100 AFLW2000-3D originals
# (targets: the boxes whose 3DDFA_V2 ROI equals the benchmark's ROI box); see
# `python -m experiments.predict --calibrate` re-measures them.
CALIBRATION = {
    # 56 of 100 images matched a frontal detection, 11 a profile one, 33 none
    # (AFLW2000-3D is rich in large poses). Haar boxes are looser than FaceBoxes'.
    'frontal': dict(scale=0.794, dx=0.0019, dy=0.0281),
    'profile': dict(scale=0.6399, dx=0.0205, dy=0.0556),
}
# The cascades' files in OpenCV's data folder.
FRONTAL_XML = 'haarcascade_frontalface_alt2.xml'
PROFILE_XML = 'haarcascade_profileface.xml'
EYE_XML = 'haarcascade_eye.xml'
# Frontal detections with fewer merged hits than this must show an eye in their
# upper 60%. On the demo photos a bare shoulder scored 10 and real faces 15-38;
# of the 56 frontal detections on the AFLW2000-3D originals, 4 scored below 12
# and all 4 showed an eye (a squinting face scored 16 with no eye found).
WEAK_FRONTAL = 12


@dataclasses.dataclass
class Detection:
  """One face: ``box`` (5,) x1, y1, x2, y2 (calibrated) and score (OpenCV's
  neighbour count); ``kind``: frontal, profile or profile_mirrored; ``raw`` (4,)
  the cascade's own box."""
  box: np.ndarray
  kind: str
  raw: Optional[np.ndarray] = None


def nms(boxes, scores, iou_threshold=0.3, variant='plain'):
  """Greedy non-maximum suppression.

  Args:
    boxes: (N, 4) x1, y1, x2, y2; scores: (N,), higher is kept first.
    variant: 'plain': areas (x2 - x1) * (y2 - y1), suppress IoU > threshold;
      'fast_rcnn': Fast R-CNN's ``cpu_nms`` (FaceBoxes): pixel-inclusive areas
      (x2 - x1 + 1) * (y2 - y1 + 1) in float32, suppress IoU >= threshold.
  Returns:
    (M,) int indices of the kept boxes, best first.
  """
  if variant not in ('plain', 'fast_rcnn'):
    raise DaslError(f"nms variant must be 'plain' or 'fast_rcnn', got {variant!r}")
  fast = variant == 'fast_rcnn'
  dtype = np.float32 if fast else np.float64
  one = dtype(1 if fast else 0)
  boxes = np.asarray(boxes, dtype).reshape(-1, 4)
  scores = np.asarray(scores, dtype).reshape(-1)
  # Fast R-CNN sorts with a reversed ascending argsort; keep that tie order.
  order = np.argsort(scores)[::-1] if fast else np.argsort(-scores, kind='stable')
  area = (np.maximum(boxes[:, 2] - boxes[:, 0] + one, 0) *
          np.maximum(boxes[:, 3] - boxes[:, 1] + one, 0))
  keep = []
  while order.size:
    i = order[0]
    keep.append(i)
    rest = order[1:]
    xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
    yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
    xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
    yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
    inter = np.maximum(xx2 - xx1 + one, 0) * np.maximum(yy2 - yy1 + one, 0)
    if fast:
      with np.errstate(divide='ignore', invalid='ignore'):
        iou = inter / (area[i] + area[rest] - inter)
      order = rest[~(iou >= iou_threshold)]  # a NaN overlap suppresses nothing
    else:
      iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
      order = rest[iou <= iou_threshold]
  return np.asarray(keep, np.int64)


def calibrate_boxes(raw, scale, dx, dy):
  """Haar boxes -> FaceBoxes-like boxes: square of side ``scale * side`` at
  ``centre + (dx, dy) * side`` (side = mean of width and height).

  Args:
    raw: (N, 4) x1, y1, x2, y2.
  Returns:
    (N, 4).
  """
  raw = np.asarray(raw, np.float64).reshape(-1, 4)
  side = ((raw[:, 2] - raw[:, 0]) + (raw[:, 3] - raw[:, 1])) / 2
  cx = (raw[:, 0] + raw[:, 2]) / 2 + dx * side
  cy = (raw[:, 1] + raw[:, 3]) / 2 + dy * side
  half = scale * side / 2
  return np.stack([cx - half, cy - half, cx + half, cy + half], -1)


class HaarDetector:
  """OpenCV Haar cascades, frontal + profile (both directions), merged by NMS.

  Args:
    max_side: images are shrunk so their longer side is at most this (speed);
      boxes are scaled back to the original image.
    min_neighbors: OpenCV's detection threshold (higher: fewer false faces).
    profile: also run the profile cascade.
    calibration: per-kind ``scale, dx, dy`` (defaults: :data:`CALIBRATION`).
    weak_frontal: frontal detections scoring below this need an eye (0: off).
  """

  def __init__(self, max_side=1280, min_neighbors=8, scale_factor=1.1, profile=True,
               iou_threshold=0.3, calibration=None, weak_frontal=WEAK_FRONTAL):
    root = Path(cv2.data.haarcascades)
    self.frontal = self._load(root / FRONTAL_XML)
    self.profile = self._load(root / PROFILE_XML) if profile else None
    self.eye = self._load(root / EYE_XML) if weak_frontal else None
    self.weak_frontal = weak_frontal
    self.max_side = max_side
    self.min_neighbors = min_neighbors
    self.scale_factor = scale_factor
    self.iou_threshold = iou_threshold
    self.calibration = dict(CALIBRATION if calibration is None else calibration)

  @staticmethod
  def _load(path):
    c = cv2.CascadeClassifier(str(path))
    if c.empty():
      raise DaslError(f'{path}: cannot load the Haar cascade (is opencv-python 4.x '
                      'installed? 5.x wheels dropped the cascade files)')
    return c

  def _run(self, cascade, grey, min_size):
    """(N, 4) x1, y1, x2, y2 and (N,) neighbour counts (higher = more confident)."""
    # The score is the number of merged raw hits: on the demo photos and the
    # AFLW2000-3D originals, false faces had 6-7, nearly all true faces more
    # (the last-stage level weights did not separate them).
    rects, weights = cascade.detectMultiScale2(
        grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
        minSize=(min_size, min_size))
    if len(rects) == 0:
      return np.zeros((0, 4)), np.zeros((0,))
    r = np.asarray(rects, np.float64).reshape(-1, 4)
    return (np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], -1),
            np.asarray(weights, np.float64).reshape(-1))

  def raw_detections(self, image):
    """All cascades' boxes before NMS: list of (kind, (N, 4) boxes, (N,) scores),
    in original-image pixels."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    f = min(1.0, self.max_side / max(h, w))
    if f < 1.0:
      grey = cv2.resize(grey, (int(round(w * f)), int(round(h * f))),
                        interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(grey)
    min_size = 20
    boxes, scores = self._run(self.frontal, grey, min_size)
    if self.eye is not None and len(boxes):
      keep = [s >= self.weak_frontal or self._has_eye(grey, b) for b, s in zip(boxes, scores)]
      boxes, scores = boxes[keep], scores[keep]
    out = [('frontal', boxes, scores)]
    if self.profile is not None:
      out.append(('profile',) + self._run(self.profile, grey, min_size))
      b, s = self._run(self.profile, np.ascontiguousarray(grey[:, ::-1]), min_size)
      gw = grey.shape[1]
      b = np.stack([gw - b[:, 2], b[:, 1], gw - b[:, 0], b[:, 3]], -1) if len(b) else b
      out.append(('profile_mirrored', b, s))
    return [(k, b / f, s) for k, b, s in out]

  def _has_eye(self, grey, box):
    """Whether the eye cascade finds an eye in the upper 60% of a box."""
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    roi = grey[max(y1, 0):max(y1 + int(0.6 * (y2 - y1)), 0), max(x1, 0):max(x2, 0)]
    if roi.size == 0:
      return False
    f = 160.0 / max(roi.shape)  # eyes of 12+ px in a 160 px face
    roi = cv2.equalizeHist(cv2.resize(roi, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR))
    return len(self.eye.detectMultiScale(roi, 1.1, 3, minSize=(12, 12))) > 0

  def detections(self, image) -> List[Detection]:
    """The detector interface of ``inference.predict_image`` (same as :meth:`detect`)."""
    return self.detect(image)

  def detect(self, image) -> List[Detection]:
    """Faces in one image, best first.

    Args:
      image: (H, W, 3) uint8 BGR or (H, W) grey.
    Returns:
      list of :class:`Detection`; boxes already calibrated to FaceBoxes-like.
    """
    kinds, raws, cals, scores = [], [], [], []
    for kind, boxes, weights in self.raw_detections(image):
      if not len(boxes):
        continue
      c = self.calibration['frontal' if kind == 'frontal' else 'profile']
      dx = -c['dx'] if kind == 'profile_mirrored' else c['dx']
      cals.append(calibrate_boxes(boxes, c['scale'], dx, c['dy']))
      raws.append(boxes)
      scores.append(weights)
      kinds += [kind] * len(boxes)
    if not kinds:
      return []
    raws, cals, scores = np.concatenate(raws), np.concatenate(cals), np.concatenate(scores)
    # Frontal detections win over profile ones on overlap (their boxes are the
    # better calibrated); scores only rank within a cascade.
    priority = scores + np.where(np.asarray(kinds) == 'frontal', 1e6, 0.0)
    keep = nms(raws, priority, self.iou_threshold)
    return [Detection(box=np.append(cals[i], scores[i]), kind=kinds[i], raw=raws[i])
            for i in keep]


# ----------------------------------------------------------------------------
# Box and landmark files: one entry per face, keyed by image file name.


def _key(name):
  return Path(str(name)).name


BOXES_SCHEMA = ('JSON {"img.jpg": [[x1, y1, x2, y2, score?], ...]}, the same under a '
                '"boxes" key (faceboxes_reference.json), or [{"image": "img.jpg", '
                '"box": [x1, y1, x2, y2], "score": s?}, ...]; or CSV img.jpg,x1,y1,x2,y2[,score]')


def _is_num(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _json_box_rows(path, data):
  """(name, values, where) rows of a parsed --boxes JSON file (see load_boxes)."""
  expected = f'--boxes {path}: expected {BOXES_SCHEMA.split("; or CSV")[0]}'
  if isinstance(data, dict) and isinstance(data.get('boxes'), dict):
    data = data['boxes']  # {"about": ..., "boxes": {path: [[x1, y1, x2, y2, score]]}}
  rows, names = [], []
  if isinstance(data, dict):
    for name, boxes in data.items():
      where = f'{path} entry {name!r}'
      if not isinstance(boxes, list):
        raise DaslError(f'{expected}; entry {name!r} holds {type(boxes).__name__} '
                        f'{json.dumps(boxes)[:40]}')
      if boxes and all(_is_num(v) for v in boxes):
        boxes = [boxes]  # one box
      for b in boxes:
        if not isinstance(b, list):
          raise DaslError(f'--boxes {where}: expected a list of [x1, y1, x2, y2, score?] '
                          f'boxes, got {json.dumps(b)[:40]}')
      names.append(name)
      rows += [(name, b, where) for b in boxes]
  elif isinstance(data, list):
    for i, r in enumerate(data):
      if not isinstance(r, dict) or 'image' not in r or 'box' not in r \
          or not isinstance(r['box'], list):
        raise DaslError(f'{expected}; item {i} is not {{"image": ..., "box": [...]}}')
      names.append(r['image'])
      rows.append((r['image'], list(r['box']) + ([r['score']] if 'score' in r else []),
                   f'{path} item {i}'))
  else:
    raise DaslError(expected)
  return rows, names


def load_boxes(path) -> Dict[str, np.ndarray]:
  """Read face boxes given by the user (``--boxes``), in image pixels.

  * JSON ``{"img.jpg": [[x1, y1, x2, y2(, score)], ...], ...}`` (one box may be
    given bare; ``[]``: the image has no face);
  * the same map under a ``"boxes"`` key, other keys ignored: the layout of
    ``$DASL_ASSETS/pretrained/faceboxes_reference.json``;
  * JSON list ``[{"image": "img.jpg", "box": [x1, y1, x2, y2], "score": s}, ...]``
    (score optional);
  * CSV: rows ``img.jpg,x1,y1,x2,y2[,score]`` (a header row is skipped).

  Images are matched by file name only (``dir/a.jpg`` names ``a.jpg``).

  Returns:
    image file name (no folder) -> (F, 5) float boxes (score 1 when absent;
    (0, 5) for an image listed with no boxes).
  Raises:
    DaslError: one line naming the file, the entry and what was expected.
  """
  path = Path(path)
  if not path.exists():
    raise DaslError(f'--boxes {path}: file not found')
  if path.is_dir():
    raise DaslError(f'--boxes {path}: is a folder, expected {BOXES_SCHEMA}')
  rows = []  # (name, values, where)
  names = []  # every image named (also those with no boxes)
  if path.suffix.lower() == '.json':
    try:
      data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise DaslError(f'--boxes {path}: not valid JSON ({e})') from None
    rows, names = _json_box_rows(path, data)
  else:
    try:
      text = path.read_text()
    except UnicodeDecodeError:
      raise DaslError(f'--boxes {path}: not a text file; expected {BOXES_SCHEMA}') from None
    for i, r in enumerate(csv.reader(text.splitlines())):
      r = [c.strip() for c in r if c.strip() != '']
      if not r or r[0].startswith('#'):
        continue
      if i == 0 and not is_number(r[1] if len(r) > 1 else 'x'):
        continue  # header
      rows.append((r[0], r[1:], f'{path} row {i + 1}'))
  out: Dict[str, list] = {_key(n): [] for n in names}
  for name, vals, where in rows:
    try:
      v = [float(x) for x in vals]
    except (TypeError, ValueError):
      raise DaslError(f'--boxes {where}: box values must be numbers, got {vals}') from None
    if len(v) not in (4, 5):
      raise DaslError(f'--boxes {where}: expected x1,y1,x2,y2[,score], got {len(v)} values')
    if v[2] <= v[0] or v[3] <= v[1]:
      raise DaslError(f'--boxes {where}: box {v[:4]} has x2 <= x1 or y2 <= y1')
    out.setdefault(_key(name), []).append(v + [1.0] * (5 - len(v)))
  return {k: np.asarray(v, np.float64).reshape(-1, 5) for k, v in out.items()}


def load_landmarks(path) -> Dict[str, np.ndarray]:
  """Read 68-point detector landmarks given by the user (image pixels).

  * text/CSV: lines ``img.jpg,x1,y1,...,x68,y68`` (137 fields; 2DASL's
    ``detect_testData_1998.txt`` format); several lines may name one image;
  * JSON: ``{"img.jpg": [[x, y] x 68]}`` or ``{"img.jpg": [[[x, y] x 68], ...]}``.

  Returns:
    image file name -> (F, 68, 2) float32.
  """
  path = Path(path)
  if not path.exists():
    raise DaslError(f'--landmarks {path}: file not found')
  out: Dict[str, list] = {}
  if path.suffix.lower() == '.json':
    try:
      data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise DaslError(f'--landmarks {path}: not valid JSON ({e})') from None
    if not isinstance(data, dict):
      raise DaslError(f'--landmarks {path}: expected a JSON object image -> points')
    for name, pts in data.items():
      a = np.asarray(pts, np.float32)
      if a.shape == (68, 2):
        a = a[None]
      if a.ndim != 3 or a.shape[1:] != (68, 2):
        raise DaslError(f'--landmarks {path} entry {name!r}: expected 68 [x, y] points '
                        f'per face, got shape {a.shape}')
      out.setdefault(_key(name), []).extend(list(a))
  else:
    names, pts = read_landmark_file(path, expected_k=68, what='--landmarks')
    for name, a in zip(names, pts):
      out.setdefault(_key(name), []).append(a)
  return {k: np.stack(v) for k, v in out.items()}


def calibrate(image_paths, target_rois, detector=None):
  """Measure :data:`CALIBRATION` from images with known 3DDFA ROI boxes.

  For each image the detection overlapping the known ROI most is matched; the
  target is the square box whose 3DDFA_V2 ROI (``crop.roi_box_from_bbox``) is
  the known ROI: side ``roi_side / 1.58``, centre ``roi_centre - (0, 0.14 side)``.

  Args:
    image_paths: N image files.
    target_rois: (N, 4) ROI boxes.
  Returns:
    dict kind -> dict(scale, dx, dy, n) (medians over matched images) and
    'missed': number of images without a matching detection.
  """
  from dasl_jax.geometry import crop as C
  det = detector or HaarDetector(calibration={'frontal': dict(scale=1, dx=0, dy=0),
                                              'profile': dict(scale=1, dx=0, dy=0)})
  stats = {'frontal': [], 'profile': []}
  missed = 0
  for path, roi in zip(image_paths, np.asarray(target_rois, np.float64)):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    # The ROI is about twice a Haar box: match the detection covering most of
    # the ROI with at least 60% of itself inside it.
    best, best_inter = None, 0.0
    for d in det.detect(img):
      inter, area = _intersection(d.raw, roi), _area(d.raw)
      if inter > best_inter and inter >= 0.6 * area:
        best, best_inter = d, inter
    if best is None:
      missed += 1
      continue
    side_t = (roi[2] - roi[0]) / C.BBOX_SCALE
    cx_t = (roi[0] + roi[2]) / 2
    cy_t = (roi[1] + roi[3]) / 2 - C.BBOX_SHIFT * side_t
    r = best.raw
    side = ((r[2] - r[0]) + (r[3] - r[1])) / 2
    dx = (cx_t - (r[0] + r[2]) / 2) / side
    if best.kind == 'profile_mirrored':
      dx = -dx
    stats['frontal' if best.kind == 'frontal' else 'profile'].append(
        (side_t / side, dx, (cy_t - (r[1] + r[3]) / 2) / side))
  out = {'missed': missed}
  for k, v in stats.items():
    v = np.asarray(v).reshape(-1, 3)
    out[k] = (dict(zip(('scale', 'dx', 'dy'), np.median(v, 0).round(4).tolist()), n=len(v))
              if len(v) else dict(scale=1.0, dx=0.0, dy=0.0, n=0))
  return out


def _intersection(a, b):
  x1, y1 = max(a[0], b[0]), max(a[1], b[1])
  x2, y2 = min(a[2], b[2]), min(a[3], b[3])
  return max(x2 - x1, 0) * max(y2 - y1, 0)


def _area(a):
  return max(a[2] - a[0], 0) * max(a[3] - a[1], 0)
