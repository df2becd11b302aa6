"""Face boxes -> square ROI boxes -> 120x120 crops, as 3DDFA / 3DDFA_V2 do it.

An ROI box is ``(sx, sy, ex, ey)`` floats in original-image pixels; it is what
``camera.crop_to_image`` needs to map crop landmarks back. The pixel crop itself
uses the rounded box (as the 3DDFA code does), the mapping uses the float box.
"""
from __future__ import annotations

import cv2
import numpy as np

from dasl_jax.geometry.camera import CROP_SIZE
from dasl_jax.errors import DaslError

# 3DDFA_V2 (utils/functions.py, parse_roi_box_from_bbox) for FaceBoxes boxes.
BBOX_SHIFT = 0.14
BBOX_SCALE = 1.58


def roi_box_from_bbox(bbox, shift=BBOX_SHIFT, scale=BBOX_SCALE):
  """A detector box -> square ROI box (3DDFA_V2's ``parse_roi_box_from_bbox``).

  ``old_size = (w + h) / 2``; centre moved down by ``0.14 * old_size``;
  side ``int(1.58 * old_size)`` (3DDFA_V2 truncates to an integer). Boxes of
  another detector are first made FaceBoxes-like (``detect.calibrate_boxes``).

  Args:
    bbox: (4,) or (..., 4) ``x1, y1, x2, y2`` (extra trailing columns ignored).
  Returns:
    (..., 4) float64 ROI boxes ``sx, sy, ex, ey``.
  """
  b = np.asarray(bbox, np.float64)[..., :4]
  cx = (b[..., 0] + b[..., 2]) / 2
  cy = (b[..., 1] + b[..., 3]) / 2
  w = b[..., 2] - b[..., 0]
  h = b[..., 3] - b[..., 1]
  old_size = (w + h) / 2
  cy = cy + old_size * shift
  size = np.trunc(old_size * scale)
  return np.stack([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], -1)


def roi_box_from_landmarks(pts):
  """68 (or any K) image landmarks -> square ROI box (3DDFA v1's rule).

  From cleardusk/3DDFA ``utils/inference.py``, ``parse_roi_box_from_landmark``:
  the points' bounding box is made square with side ``max(w, h)`` about its
  centre, then the ROI side is that square's diagonal, ``sqrt(2) * max(w, h)``,
  about the same centre (no vertical shift).

  Args:
    pts: (..., K, 2) image pixels.
  Returns:
    (..., 4) float64 ROI boxes.
  """
  p = np.asarray(pts, np.float64)
  lo, hi = p.min(axis=-2), p.max(axis=-2)
  centre = (lo + hi) / 2
  side = np.sqrt(2.0) * np.max(hi - lo, axis=-1)
  return np.concatenate([centre - side[..., None] / 2, centre + side[..., None] / 2], -1)


def crop_image(image, roi_box, size=CROP_SIZE):
  """Cut the (rounded) ROI box out of an image, zero outside, resize to size x size.

  3DDFA's ``crop_img`` + ``cv2.resize(..., INTER_LINEAR)``.

  Args:
    image: (H, W, 3) uint8 BGR.
    roi_box: (4,) ``sx, sy, ex, ey``.
  Returns:
    (size, size, 3) uint8.
  """
  h, w = image.shape[:2]
  sx, sy, ex, ey = [int(round(float(v))) for v in roi_box]
  dw, dh = ex - sx, ey - sy
  if dw <= 0 or dh <= 0:
    raise DaslError(f'ROI box {list(map(float, roi_box))} is empty')
  out = np.zeros((dh, dw) + image.shape[2:], np.uint8)
  # Intersection of the box with the image, in both frames.
  x0, y0, x1, y1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
  if x1 > x0 and y1 > y0:
    out[y0 - sy:y1 - sy, x0 - sx:x1 - sx] = image[y0:y1, x0:x1]
  return cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)


def crop_faces(image, roi_boxes, size=CROP_SIZE):
  """Many ROI boxes of one image -> (F, size, size, 3) uint8 crops."""
  roi_boxes = np.asarray(roi_boxes, np.float64).reshape(-1, 4)
  if len(roi_boxes) == 0:
    return np.zeros((0, size, size, 3), np.uint8)
  return np.stack([crop_image(image, b, size) for b in roi_boxes])
