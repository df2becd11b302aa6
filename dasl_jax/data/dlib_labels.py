"""68-point labels in the iBUG definition from dlib's shape predictor (data preparation).

AFLW's hand labels follow AFLW's own point definitions; our landmarks and the
start model follow iBUG-68. dlib's 68-point shape predictor (trained on iBUG
300-W) labels crops in the iBUG definition, offline and once. It is an optional
dependency (``pip install dlib-bin face-recognition-models``: the wheel and the
``shape_predictor_68_face_landmarks.dat`` model); nothing else in the package
needs it.

The predictor starts from a face rectangle. The crops are 3DDFA crops around a
known face, so the rectangle is known up to the detector's habits: it is
calibrated once as the median rectangle dlib's own detector draws on a sample of
the crops (relative to the crop), and then given for every crop. Points are in
the pixels of each stored crop; a crop whose points leave the crop by more than
``tolerance`` of its size, or that cannot be read, is counted and skipped.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from dasl_jax.errors import DaslError

# Upsampling before prediction: the crops are ~120 px, small for dlib's regression trees.
UPSCALE = 2.0


def load_predictor(model_path: Optional[str] = None):
  """(dlib module, shape predictor); a missing package or model file is one line."""
  try:
    import dlib
  except ImportError:
    raise DaslError('dlib is not installed: pip install dlib-bin face-recognition-models '
                    '(an optional data-preparation dependency)') from None
  if not model_path:
    try:
      import face_recognition_models
    except ImportError:
      raise DaslError('no --predictor given and face_recognition_models is not installed: '
                      'pip install face-recognition-models (it holds '
                      'shape_predictor_68_face_landmarks.dat)') from None
    model_path = face_recognition_models.pose_predictor_model_location()
  if not Path(model_path).is_file():
    raise DaslError(f'--predictor {model_path}: file not found')
  try:
    return dlib, dlib.shape_predictor(str(model_path))
  except RuntimeError as e:
    raise DaslError(f'--predictor {model_path}: not a dlib shape predictor ({e})') from None


def _read(image_dir, name):
  img = cv2.imread(os.path.join(str(image_dir), name), cv2.IMREAD_COLOR)
  if img is None:
    return None
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _upscaled(img):
  return cv2.resize(img, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)


def calibrate_rect(image_dir, names: Sequence[str], sample=300, seed=0, progress=True):
  """The median face rectangle dlib's detector draws, as fractions of the crop.

  Args:
    names: the crops; ``sample`` of them (drawn with ``seed``) are detected.
  Returns:
    ((4,) left, top, right, bottom fractions, number of crops with exactly one face).
  """
  dlib, _ = load_predictor()
  detector = dlib.get_frontal_face_detector()
  rng = np.random.default_rng(seed)
  pick = rng.choice(len(names), min(sample, len(names)), replace=False)
  rects = []
  for i in tqdm(pick, desc='dlib: calibrating the face rectangle', disable=not progress,
                file=sys.stderr):
    img = _read(image_dir, names[i])
    if img is None:
      continue
    big = _upscaled(img)
    found = detector(big, 1)
    if len(found) == 1:
      r = found[0]
      h, w = big.shape[:2]
      rects.append([r.left() / w, r.top() / h, r.right() / w, r.bottom() / h])
  if len(rects) < 10:
    raise DaslError(f'{image_dir}: dlib found a single face in only {len(rects)} of '
                    f'{len(pick)} sampled crops; cannot calibrate the face rectangle')
  return np.median(np.asarray(rects), axis=0), len(rects)


def _iou(a, b):
  lo = np.maximum(a[:2], b[:2])
  hi = np.minimum(a[2:], b[2:])
  inter = np.prod(np.maximum(hi - lo, 0.0))
  area = lambda r: np.prod(np.maximum(r[2:] - r[:2], 0.0))
  return inter / max(area(a) + area(b) - inter, 1e-12)


def label_crops(image_dir, names: Sequence[str], rect_fraction, tolerance=0.1, progress=True,
                model_path=None, require_detection=True, min_iou=0.3):
  """dlib's 68 points on each crop.

  The predictor was trained from its detector's rectangles and is only reliable
  where its detector sees a face (a near-frontal one): with ``require_detection`` a
  crop is labelled only when the detector finds a face overlapping the calibrated
  rectangle (IoU >= ``min_iou``), started from the detector's rectangle; otherwise the
  calibrated rectangle starts every crop.

  Args:
    rect_fraction: (4,) from :func:`calibrate_rect`.
    tolerance: a crop is skipped when a point lies farther than this fraction of the
      crop size outside it (the fit ran off the face).
  Returns:
    (points (N, 68, 2) float32 in each crop's pixels (NaN where skipped),
     ok (N,) bool, skipped {name: reason}).
  """
  dlib, predictor = load_predictor(model_path)
  detector = dlib.get_frontal_face_detector() if require_detection else None
  n = len(names)
  pts = np.full((n, 68, 2), np.nan, np.float32)
  ok = np.zeros(n, bool)
  skipped = {}
  fr = np.asarray(rect_fraction, np.float64)
  for i, name in enumerate(tqdm(names, desc='dlib: 68 points', disable=not progress,
                                file=sys.stderr)):
    img = _read(image_dir, name)
    if img is None:
      skipped[name] = 'unreadable image'
      continue
    big = _upscaled(img)
    h, w = big.shape[:2]
    expected = fr * np.array([w, h, w, h])
    rect = dlib.rectangle(*[int(round(v)) for v in expected])
    if detector is not None:
      found = [r for r in detector(big, 1)
               if _iou(np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64),
                       expected) >= min_iou]
      if not found:
        skipped[name] = "dlib's detector finds no face at the crop's face"
        continue
      rect = found[0]
    shape = predictor(big, rect)
    p = np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], np.float64)
    p /= UPSCALE
    hh, ww = img.shape[:2]
    lo = -tolerance * np.array([ww, hh])
    hi = np.array([ww, hh]) * (1 + tolerance)
    if not np.all(np.isfinite(p)) or np.any(p < lo) or np.any(p > hi):
      skipped[name] = f'points more than {tolerance:g} x crop size outside the crop'
      continue
    pts[i] = p
    ok[i] = True
  return pts, ok, skipped


def write_landmark_file(path, names, pts, ok, header: Optional[str] = None):
  """``name,x1,y1,...,x68,y68`` lines for the labelled crops (the ``folder`` source's format)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [f'# {header}'] if header else []
  for name, p, good in zip(names, pts, ok):
    if good:
      lines.append(name + ',' + ','.join(f'{v:.2f}' for v in p.reshape(-1)))
  from dasl_jax.io.files import write_text_atomic
  write_text_atomic(path, '\n'.join(lines) + '\n')
  return int(np.sum(ok))
