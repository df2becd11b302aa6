"""The benchmarks as functions with explicit arguments: AFLW2000-3D, AFLW 21-point.

One place for each protocol decision, shared by ``experiments.evaluate``,
training's end-of-run evaluation, the study and the notebook:

* which images (:func:`aflw2000_indices`: all 2,000, 2DASL's 1,998, or any
  named subset) and where a 4-channel model's FLM comes from;
* running a model on the crops (:func:`predict_aflw2000`, the prediction core);
* turning saved predictions into landmarks, refusing non-finite rows and
  implausible values with one line (:func:`landmarks_from_predictions`);
* the scores (:func:`score_aflw2000`): 2D NME (x, y) or 2DASL's 3D NME, on the
  original and re-annotated ground truth, binned by either yaw file, with head
  pose MAE, and a ``protocol`` record that says what was done.

The metrics themselves (NME, bins, pose MAE, CED) are :mod:`dasl_jax.evaluation`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from dasl_jax import evaluation
from dasl_jax.evaluation import aflw2000
from dasl_jax.geometry import camera
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.errors import DaslError

NME_KINDS = ('2d', '3d')
FLM_SOURCES = ('detector', 'bootstrap')


@dataclasses.dataclass
class Predictions:
  """Landmarks of M evaluated images, all in original-image pixels.

  lms68: (M, 68, 2); lms3d: (M, 68, 3) with depth in image-pixel units (3D
  NME) or None; params: (M, 62) de-whitened (head pose) or None; flm: how a
  4-channel model's FLM was drawn (None for 3 channels and saved landmarks).
  """
  lms68: np.ndarray
  lms3d: Optional[np.ndarray] = None
  params: Optional[np.ndarray] = None
  flm: Optional[str] = None


# ----------------------------------------------------------------------------
# Which images.


def aflw2000_indices(ds: aflw2000.AFLW2000, subset=None, in_channels=3, flm='detector',
                     names=None, names_source='--names'):
  """The evaluated images: ``(label, (M,) indices)``.

  ``names`` (file names) wins; else ``subset`` 1998 / 2000; else 1998 for a
  4-channel model fed by the detector (``detect_testData_1998.txt`` has no
  landmarks for images 1081 and 1798), 2000 otherwise.
  """
  if names is not None:
    idx = ds.index_of(names, names_source)
    return f'{len(idx)} named images', idx
  if subset is None:
    subset = 1998 if (in_channels == 4 and flm == 'detector') else 2000
  return str(int(subset)), ds.subset_indices(int(subset))


def read_names(path) -> list:
  """One AFLW2000-3D file name a line (blank lines skipped)."""
  from pathlib import Path
  path = Path(path)
  if not path.exists():
    raise DaslError(f'--names {path}: file not found')
  names = [s.strip() for s in path.read_text().splitlines() if s.strip()]
  if not names:
    raise DaslError(f'--names {path}: no names in it (one AFLW2000-3D file name a line)')
  return names


# ----------------------------------------------------------------------------
# A model on the crops.


def predict_aflw2000(predictor, ds: aflw2000.AFLW2000, idx, flm='detector', batch_size=128,
                     progress=True, what='') -> Predictions:
  """Run ``predictor`` (``inference.Predictor``) on the crops ``idx``.

  4-channel models take their FLM from the detector landmarks
  (``flm='detector'``, 2DASL's protocol) or self-bootstrap from the mean face
  (``flm='bootstrap'``, the predictor's ``bootstrap_iters`` passes). ``what``
  names the image selection in errors (e.g. '--subset 2000').
  """
  if flm not in FLM_SOURCES:
    raise DaslError(f'--flm must be one of {", ".join(FLM_SOURCES)}, got {flm!r}')
  idx = np.asarray(idx)
  points18, how = None, None
  if predictor.in_channels == 4:
    if flm == 'detector':
      if ds.detector68 is None:
        raise DaslError(f'{ds.root}: no {aflw2000.DETECTIONS}; a 4-channel model needs '
                        'detector landmarks for its FLM channel (or --flm bootstrap)')
      missing = idx[~ds.has_detection[idx]]
      if len(missing):
        raise DaslError(f'{what + ": " if what else ""}this is a 4-channel model and '
                        f'{aflw2000.DETECTIONS} has no '
                        f'landmarks for images {missing.tolist()} (its FLM input); use '
                        '--subset 1998 (or --flm bootstrap)')
      from dasl_jax.inference.core import flm_points
      points18 = flm_points(ds.detector68[idx])
      how = f'detector ({aflw2000.DETECTIONS})'
    else:
      how = f'bootstrap x{predictor.bootstrap_iters}'
  out = predictor.predict_many(lambda ii: ds.load_crops(idx[ii]), len(idx), points18,
                               batch_size=batch_size, progress=progress, desc='AFLW2000-3D')
  roi = ds.roi_boxes[idx]
  lms3d_crop = np.asarray(mm.vertices2d(predictor.lm_model, out['params'], predictor.convention))
  return Predictions(lms68=evaluation.crop_to_image_landmarks(out['lms68'], roi),
                     lms3d=np.asarray(camera.crop_to_image_3d(lms3d_crop, roi), np.float32),
                     params=out['params'], flm=how)


# ----------------------------------------------------------------------------
# Saved predictions.


def _finite_rows(a, source):
  bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
  if len(bad):
    raise DaslError(f'{source}: {len(bad)} of {len(a)} rows are not finite (NaN or inf), '
                    f'rows {bad[:10].tolist()}{" ..." if len(bad) > 10 else ""}; the '
                    'benchmark needs a prediction for every evaluated image')


def landmarks_from_predictions(pred, roi_boxes, frame='crop', param_stats=None,
                               lm_model=None, convention='v1', param_kind='whitened',
                               source='--predictions') -> Predictions:
  """Saved predictions of M images -> :class:`Predictions` in image pixels.

  Args:
    pred: (M, 62) parameters; (M, 2, 68) or (M, 68, 2) landmarks in ``frame``
      ('crop': 120x120 crop pixels, 'image': original-image pixels); or
      (M, 3, 68) landmarks with depth in original-image pixels.
    roi_boxes: (M, 4) crop boxes (crop frame and parameters).
    param_stats, lm_model, convention: to read parameters; ``param_kind``
      'whitened' (the network's output) or 'raw' (de-whitened, what 3DDFA_V2's
      own code saves).
  Raises:
    DaslError: wrong shape, non-finite rows, or values that do not look like
      the declared kind (e.g. raw parameters declared whitened).
  """
  pred = np.asarray(pred)
  if pred.dtype.kind not in 'fiu':
    raise DaslError(f'{source}: expected numbers, got dtype {pred.dtype}')
  pred = pred.astype(np.float64)
  if pred.ndim == 0 or len(pred) != len(roi_boxes):
    raise DaslError(f'{source}: {len(pred) if pred.ndim else 0} rows for {len(roi_boxes)} '
                    'evaluated images')
  _finite_rows(pred, source)
  roi = np.asarray(roi_boxes, np.float64)
  if pred.ndim == 2 and pred.shape[1] == 62:
    if param_stats is None or lm_model is None:
      raise DaslError(f'{source}: (N, 62) parameters need --param_stats and a morphable '
                      'model (--bfm)')
    if param_kind == 'whitened':
      med = float(np.median(np.abs(pred)))
      if med > 20:  # whitened values are about unit scale
        raise DaslError(f'{source}: declared whitened, but the median |value| is {med:.3g} '
                        '(whitened parameters are about unit scale): these look like '
                        'de-whitened parameters (3DDFA_V2 saves param * std + mean); pass '
                        '--param_kind raw')
      p = param_stats.dewhiten(pred)
    elif param_kind == 'raw':
      w = param_stats.whiten(pred)
      med = float(np.median(np.abs(w)))
      if med > 20:
        raise DaslError(f'{source}: declared raw (de-whitened), but whitening them gives '
                        f'median |value| {med:.3g} instead of about 1: check --param_stats '
                        'or pass --param_kind whitened')
      p = pred
    else:
      raise DaslError(f'--param_kind must be whitened or raw, got {param_kind!r}')
    p = p.astype(np.float32)
    l3 = np.asarray(mm.vertices2d(lm_model.landmark_model(), p, convention), np.float64)
    out = Predictions(lms68=evaluation.crop_to_image_landmarks(l3[..., :2], roi),
                      lms3d=np.asarray(camera.crop_to_image_3d(l3, roi), np.float32), params=p)
    _check_inside(out.lms68, roi, source, 'parameters')
    return out
  if pred.ndim == 3 and pred.shape[1:] in ((2, 68), (3, 68)):
    pts = np.swapaxes(pred, 1, 2)
  elif pred.ndim == 3 and pred.shape[1:] in ((68, 2), (68, 3)):
    pts = pred
  else:
    raise DaslError(f'{source}: expected (N, 62) parameters, (N, 2, 68) landmarks or (N, 3, 68) '
                    f'landmarks with depth, got shape {pred.shape}')
  if pts.shape[-1] == 3 and frame != 'image':
    raise DaslError(f'{source}: (N, 3, 68) landmarks are read in original-image pixels; '
                    'pass --landmark_frame image (or --names)')
  if frame == 'crop':
    other = 'image'
    lms = evaluation.crop_to_image_landmarks(pts[..., :2], roi)
  elif frame == 'image':
    other = 'crop'
    lms = pts[..., :2].astype(np.float32)
  else:
    raise DaslError(f'--landmark_frame must be crop or image, got {frame!r}')
  _check_inside(lms, roi, source, f'landmarks (if they are {other} pixels, pass '
                f'--landmark_frame {other})')
  return Predictions(lms68=lms, lms3d=pts.astype(np.float32) if pts.shape[-1] == 3 else None)


def _off_face_fraction(lms, roi):
  """Fraction of images whose landmark centre is more than half a crop box from the
  box centre (a sane prediction sits well inside: the crop is ~1.6 faces wide)."""
  c = lms.mean(axis=1)
  centre = (roi[:, :2] + roi[:, 2:]) / 2
  size = (roi[:, 2:] - roi[:, :2]).mean(axis=1)
  return float(np.mean(np.linalg.norm(c - centre, axis=1) > 0.5 * size))


def _check_inside(lms, roi, source, what):
  frac = _off_face_fraction(np.asarray(lms, np.float64), np.asarray(roi, np.float64))
  if frac > 0.5:
    raise DaslError(f'{source}: for {frac:.0%} of the images the predicted face centre lies '
                    f'over half a crop box away from the face: implausible {what}')


# ----------------------------------------------------------------------------
# Scores.


def nme_3d(pred3d, gt3d):
  """2DASL's 3D 68-point NME (``nme_for_alignment_68pts_3d.m``), per image.

  z of prediction and ground truth are each shifted to a minimum of 0; the
  mean 3D point-to-point error is divided by ``sqrt(w * h)`` of the ground
  truth's 2D (x, y) box.

  Args:
    pred3d, gt3d: (N, 68, 3) image pixels with depth.
  Returns:
    (N,) fractions.
  """
  p = np.asarray(pred3d, np.float64).copy()
  g = np.asarray(gt3d, np.float64).copy()
  if p.shape != g.shape or p.ndim != 3 or p.shape[-1] != 3:
    raise DaslError(f'3D NME needs (N, 68, 3) predictions and ground truth, got {p.shape} '
                    f'and {g.shape}')
  p[..., 2] -= p[..., 2].min(axis=1, keepdims=True)
  g[..., 2] -= g[..., 2].min(axis=1, keepdims=True)
  err = np.linalg.norm(p - g, axis=-1).mean(axis=1)
  return err / evaluation.bbox_size(g[..., :2])


def score_aflw2000(ds: aflw2000.AFLW2000, idx, pred: Predictions, nme='2d',
                   yaw_file='default', pose=True):
  """The AFLW2000-3D tables for images ``idx``.

  Returns a JSON-ready dict: ``original`` and (2D NME, when the folder has it)
  ``reannotated`` summaries (:func:`evaluation.binned_summary`, percent),
  ``pose`` (MAE, when parameters are known) and ``protocol`` (what was done).
  """
  if nme not in NME_KINDS:
    raise DaslError(f'--nme must be one of {", ".join(NME_KINDS)}, got {nme!r}')
  idx = np.asarray(idx)
  yaws = ds.yaws_of(yaw_file)[idx]
  res = {}
  if nme == '2d':
    res['original'] = evaluation.binned_summary(evaluation.nme(pred.lms68, ds.pts68[idx]), yaws)
    if ds.reannotated is not None:
      res['reannotated'] = evaluation.binned_summary(
          evaluation.nme(pred.lms68, ds.reannotated[idx]), yaws)
  else:
    if ds.pts68_3d is None:
      raise DaslError(f'{ds.root / aflw2000.PTS68}: holds no z, the 3D NME needs (N, 3, 68)')
    if pred.lms3d is None:
      raise DaslError('--nme 3d needs depth: a checkpoint, (N, 62) parameters or (N, 3, 68) '
                      'landmarks, not (N, 2, 68)')
    res['original'] = evaluation.binned_summary(nme_3d(pred.lms3d, ds.pts68_3d[idx]), yaws)
  if pose and pred.params is not None:
    res['pose'] = pose_scores(ds, idx, pred.params)
  b = evaluation.yaw_bins(yaws)
  res['protocol'] = {
      'benchmark': 'AFLW2000-3D', 'images': int(len(idx)),
      'nme': '2D (x, y)' if nme == '2d' else '3D (z shifted to min 0 per face)',
      'normaliser': 'sqrt(w*h) of the ground-truth 68-point (x, y) box',
      'yaw_file': aflw2000.YAW_FILES[yaw_file],
      'per_bin': [int((b == k).sum()) for k in range(3)], 'flm': pred.flm}
  return res


def pose_scores(ds: aflw2000.AFLW2000, idx, params):
  """Yaw MAE over ``idx`` and yaw / pitch / roll MAE on the images with a fitting .mat."""
  idx = np.asarray(idx)
  angles = evaluation.aflw_pose_angles_from_params(params)
  n = len(idx)
  yaw = evaluation.pose_mae(angles, np.c_[ds.yaws[idx], ds.yaws[idx], ds.yaws[idx]],
                            mask=np.c_[np.ones(n, bool), np.zeros((n, 2), bool)])
  out = {'yaw_mae_all': yaw['yaw'], 'n_all': n}
  o_idx, o_ang = aflw2000.load_original_poses(ds.root, ds.names)
  pos = {int(i): k for k, i in enumerate(idx)}
  keep = [k for k, i in enumerate(o_idx) if int(i) in pos]
  if keep:
    rows = [pos[int(o_idx[k])] for k in keep]
    out['originals'] = evaluation.pose_mae(angles[rows], o_ang[keep])
  return out


def protocol_line(res) -> str:
  """One line that says how the numbers were made."""
  p = res['protocol']
  bins = '/'.join(str(c) for c in p['per_bin'])
  flm = f'; FLM {p["flm"]}' if p.get('flm') else ''
  if p.get('tta', 'none') != 'none':
    flm += f'; test-time averaging {p["tta"]}'
  if p['benchmark'] == 'AFLW 21-point':
    return (f'protocol: AFLW 21-point, {p["images"]} images, {p["nme"]}, normaliser '
            f'{p["normaliser"]}, yaw bins {bins}{flm}')
  return (f'protocol: AFLW2000-3D, {p["images"]} images, {p["nme"]} NME, normaliser '
          f'{p["normaliser"]}, yaw file {p["yaw_file"]} (bins {bins}){flm}')


def score_aflw21(ds: aflw2000.AFLW21, lms68_image, flm=None):
  """AFLW 21-point NME of (N, 68, 2) image-pixel predictions; JSON-ready dict."""
  summary, _ = evaluation.aflw21_nme(lms68_image, ds.pts21, ds.yaws, ds.visible)
  b = evaluation.yaw_bins(ds.yaws)
  return {'aflw21': summary, 'protocol': {
      'benchmark': 'AFLW 21-point', 'images': len(ds),
      'nme': '68 -> 21 points, invisible points masked',
      'normaliser': 'sqrt(w*h) of the visible ground-truth points\' box',
      'per_bin': [int((b == k).sum()) for k in range(3)], 'flm': flm}}
