"""Evaluation metrics of 3DDFA / 2DASL (docs/PROTOCOLS.md), pure numpy.

* AFLW2000-3D 68-point 2D NME: per image, mean point-to-point error in the
  original image divided by ``sqrt(w * h)`` of the ground-truth 68 points'
  box; yaw bins [0, 30], (30, 60], (60, 90+]; headline = mean of bin means.
* AFLW 21-point NME: 68 -> 21 points, invisible GT points masked, the box of
  the visible GT points.
* Head-pose MAE (yaw, pitch, roll); a video's frame-to-frame landmark jitter.
* CED curves and their AUC.

Loading the AFLW2000-3D folder is :mod:`dasl_jax.evaluation.aflw2000`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.geometry import landmarks
# AFLW's angle convention lives with the other pose conventions, in camera.py.
from dasl_jax.geometry.camera import (aflw_pose_angles, aflw_pose_angles_from_params,  # noqa: F401
                             rotation_from_pose_para)
from dasl_jax.errors import DaslError

YAW_BIN_EDGES = (30.0, 60.0)
BIN_NAMES = ('[0,30]', '[30,60]', '[60,90]')


def crop_to_image_landmarks(lms_crop, roi_boxes):
  """Crop-pixel landmarks -> original-image pixels via the crops' ROI boxes.

  Args:
    lms_crop: (N, K, 2) crop pixels (120x120 crops).
    roi_boxes: (N, 4) ``sx, sy, ex, ey`` (``AFLW2000-3D_crop.roi_box.npy``).
  Returns:
    (N, K, 2) float32 image pixels.
  """
  return np.asarray(camera.crop_to_image(np.asarray(lms_crop, np.float32),
                                         np.asarray(roi_boxes, np.float32)))


def bbox_size(gt, visible=None):
  """``sqrt(w * h)`` of the box around (visible) GT points: (N, K, 2) -> (N,)."""
  gt = np.asarray(gt, np.float64)
  if visible is None:
    lo, hi = gt.min(axis=1), gt.max(axis=1)
  else:
    vis = np.asarray(visible, bool)[..., None]
    lo = np.where(vis, gt, np.inf).min(axis=1)
    hi = np.where(vis, gt, -np.inf).max(axis=1)
  wh = hi - lo
  return np.sqrt(wh[:, 0] * wh[:, 1])


def nme(pred, gt, visible=None):
  """Per-image NME (fraction, not percent).

  Args:
    pred: (N, K, 2) predicted points, image pixels.
    gt: (N, K, 2) ground truth, image pixels.
    visible: optional (N, K) mask; masked points are left out of the mean and
      of the normalising box.
  Returns:
    (N,) mean point error / sqrt(w * h) of the GT box.
  """
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
    raise DaslError(f'NME needs predictions and ground truth of equal shape (N, K, 2), '
                    f'got {pred.shape} and {gt.shape}')
  dist = np.linalg.norm(pred - gt, axis=-1)
  if visible is None:
    err = dist.mean(axis=1)
  else:
    vis = np.asarray(visible, np.float64)
    err = (dist * vis).sum(axis=1) / np.maximum(vis.sum(axis=1), 1)
  return err / bbox_size(gt, visible)


def jitter(pred, gt):
  """Frame-to-frame jitter of a video's landmarks (fraction, like :func:`nme`): mean over
  frames and points of ``|d pred - d gt|`` over the ground-truth box size ``sqrt(w * h)``
  of the later frame, ``d`` the change from the frame before.

  Args:
    pred, gt: (T, K, 2) image pixels, T >= 2.
  Returns:
    float.
  """
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  d = np.diff(pred, axis=0) - np.diff(gt, axis=0)
  return float((np.linalg.norm(d, axis=-1).mean(-1) / bbox_size(gt[1:])).mean())


def yaw_bins(yaws):
  """(N,) yaw degrees -> (N,) bin 0 (|yaw| <= 30), 1 (30 < |yaw| <= 60), 2 (> 60)."""
  a = np.abs(np.asarray(yaws, np.float64))
  return np.where(a <= YAW_BIN_EDGES[0], 0, np.where(a <= YAW_BIN_EDGES[1], 1, 2))


def binned_summary(errors, yaws, scale=100.0):
  """Per-bin means, mean of the bin means, plain mean, counts.

  Args:
    errors: (N,) per-image errors (NME fractions).
    yaws: (N,) yaw degrees.
    scale: multiply by this (100 -> percent).
  Returns:
    dict ``bins`` [3], ``mean_of_bins``, ``mean``, ``n``, ``counts`` [3].
  """
  errors = np.asarray(errors, np.float64) * scale
  b = yaw_bins(yaws)
  counts = [int((b == k).sum()) for k in range(3)]
  means = [float(errors[b == k].mean()) if counts[k] else float('nan') for k in range(3)]
  return {'bins': means, 'mean_of_bins': float(np.mean(means)),
          'mean': float(errors.mean()), 'n': int(errors.size), 'counts': counts}


def aflw2000_nme(lms_crop, gt_image, roi_boxes, yaws):
  """AFLW2000-3D protocol on crop landmarks.

  Args:
    lms_crop: (N, 68, 2) predicted crop pixels (in the model's own convention).
    gt_image: (N, 68, 2) ground truth, image pixels.
    roi_boxes: (N, 4); yaws: (N,).
  Returns:
    (summary dict in percent as :func:`binned_summary`, (N,) per-image NME).
  """
  pred = crop_to_image_landmarks(lms_crop, roi_boxes)
  per_image = nme(pred, gt_image)
  return binned_summary(per_image, yaws), per_image


def aflw21_nme(lms68_image, gt21, yaws, visible=None):
  """AFLW 21-point protocol.

  Args:
    lms68_image: (N, 68, 2) predicted points in image pixels.
    gt21: (N, 21, 2) AFLW ground truth; x == -1 marks an invisible point.
    yaws: (N,) degrees.
    visible: optional (N, 21) mask; default ``gt21[..., 0] != -1``.
  Returns:
    (summary dict in percent, (N,) per-image NME).
  """
  pred21 = np.asarray(landmarks.aflw21_from_68(np.asarray(lms68_image, np.float32)))
  gt21 = np.asarray(gt21, np.float64)
  if visible is None:
    visible = gt21[..., 0] != -1
  per_image = nme(pred21, gt21, visible)
  return binned_summary(per_image, yaws), per_image


# ----------------------------------------------------------------------------
# Head pose.


def pose_mae(pred, gt, mask=None):
  """Mean absolute angle error (degrees), differences wrapped to [-180, 180).

  Args:
    pred, gt: (N, 3) yaw, pitch, roll degrees.
    mask: optional (N, 3) bool of known GT angles (e.g. yaw known everywhere,
      pitch and roll only for some images).
  Returns:
    dict ``yaw``, ``pitch``, ``roll``, ``mean`` (of the three) and ``n`` [3].
  """
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  if pred.shape != gt.shape or pred.shape[-1] != 3:
    raise DaslError(f'pose MAE needs (N, 3) angles, got {pred.shape} and {gt.shape}')
  d = np.abs((pred - gt + 180.0) % 360.0 - 180.0)
  m = np.ones_like(d, bool) if mask is None else np.asarray(mask, bool)
  out = {}
  for k, name in enumerate(('yaw', 'pitch', 'roll')):
    out[name] = float(d[m[:, k], k].mean()) if m[:, k].any() else float('nan')
  out['mean'] = float(np.mean([out['yaw'], out['pitch'], out['roll']]))
  out['n'] = [int(m[:, k].sum()) for k in range(3)]
  return out


# ----------------------------------------------------------------------------
# Cumulative error distribution.


def ced(errors, thresholds):
  """Fraction of errors <= each threshold: (N,), (T,) -> (T,)."""
  e = np.sort(np.asarray(errors, np.float64))
  return np.searchsorted(e, np.asarray(thresholds, np.float64), side='right') / max(e.size, 1)


def ced_curve(errors, max_threshold, num=1001):
  """CED for plotting: (thresholds (num,), fractions (num,), sorted errors (N,))."""
  t = np.linspace(0.0, max_threshold, num)
  return t, ced(errors, t), np.sort(np.asarray(errors, np.float64))


def ced_auc(errors, max_threshold):
  """Area under the CED up to ``max_threshold``, divided by it (in [0, 1]).

  Exact for the step function: ``mean(max(0, T - e)) / T``.
  """
  e = np.asarray(errors, np.float64)
  return float(np.mean(np.clip(max_threshold - e, 0.0, None)) / max_threshold)


def format_table(results: dict, keys: Sequence[str] = ('original', 'reannotated')) -> str:
  """The papers' table: one row per ground truth, NME % per bin, means, n."""
  head = f'{"ground truth":<14}' + ''.join(f'{b:>9}' for b in BIN_NAMES) + \
      f'{"bins avg":>10}{"mean":>8}{"n":>6}'
  lines = [head]
  for k in keys:
    r = results.get(k)
    if r is None:
      continue
    lines.append(f'{k:<14}' + ''.join(f'{b:9.3f}' for b in r['bins']) +
                 f'{r["mean_of_bins"]:10.3f}{r["mean"]:8.3f}{r["n"]:6d}')
  return '\n'.join(lines)


def check_length(n_pred: int, n_list: int, what: str, subset: Optional[int] = None):
  if n_pred != n_list:
    raise DaslError(f'{what}: {n_pred} rows but the list has {n_list} images'
                    + (f' (subset {subset})' if subset else ''))
