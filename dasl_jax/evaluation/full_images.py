"""AFLW2000-3D from the full images: a detector, not the ground-truth box, picks
the crop (what a user of ``experiments.predict`` gets on a photograph).

For each of the original images (``AFLW2000/imageNNNNN.jpg``): detect faces,
take the detection whose box contains the centre of the ground-truth 68 points
(the one overlapping the ground truth's box most if several do; none: the face
counts as missed), crop by 3DDFA_V2's box rule (``geometry.crop.roi_box_from_bbox``),
predict, cut again ``refine`` times around the predicted landmarks by the landmark
rule (``inference.faces.predict_image`` does the same for a photo) and predict
again, and score the 68 landmarks in image pixels with the usual protocol
(``evaluation.protocols``). The same model on the ground-truth ROI crops of the same
detected images is the reference (``gt_roi``): the difference is what the detector
costs.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dasl_jax.errors import DaslError
from dasl_jax.evaluation import aflw2000, metrics, protocols
from dasl_jax.geometry import crop as C
from dasl_jax.io.media import load_image


def pick_face(boxes, gt68):
  """Index of the detection that is this image's annotated face, or None.

  Of the boxes that contain the ground truth's centre, the one with the largest
  intersection over union with the ground truth's 68-point box. (Until 2026-12 the
  highest score won: in AFLW2000-3D images where faces overlap, e.g. image03216
  and image03456, that was a neighbour's box reaching over the annotated face.)

  Args:
    boxes: (F, 5) x1, y1, x2, y2, score; gt68: (68, 2) ground truth.
  Returns:
    the index, or None when no box contains the centre.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
  gt = np.asarray(gt68, np.float64)
  c = gt.mean(axis=0)
  inside = ((boxes[:, 0] <= c[0]) & (c[0] <= boxes[:, 2]) &
            (boxes[:, 1] <= c[1]) & (c[1] <= boxes[:, 3]))
  if not inside.any():
    return None
  lo, hi = gt.min(axis=0), gt.max(axis=0)
  wh = np.clip(np.minimum(boxes[:, 2:4], hi) - np.maximum(boxes[:, :2], lo), 0, None)
  inter = wh[:, 0] * wh[:, 1]
  union = np.prod(boxes[:, 2:4] - boxes[:, :2], axis=1) + np.prod(hi - lo) - inter
  iou = np.where(inside, inter / np.maximum(union, 1e-12), -1.0)
  return int(np.argmax(iou))


def _scores(ds, idx, lms_image, yaws):
  out = {'original': metrics.binned_summary(metrics.nme(lms_image, ds.pts68[idx]), yaws)}
  if ds.reannotated is not None:
    out['reannotated'] = metrics.binned_summary(metrics.nme(lms_image, ds.reannotated[idx]),
                                                yaws)
  return out


def evaluate_full_images(predictor, detector, ds: aflw2000.AFLW2000, images_dir=None,
                         detector_name='', batch_size=64, yaw_file='default', progress=True,
                         refine=0):
  """Detection rate and NME of ``predictor`` on the full AFLW2000-3D images.

  Args:
    predictor: ``inference.Predictor`` or ``inference.onnx.OnnxPredictor`` (4-channel
      models bootstrap their FLM: a detector gives no landmarks).
    detector: anything with ``detections(image) -> [Detection]``
      (``inference.make_detector``).
    images_dir: the full images (default ``<root>/AFLW2000``).
    refine: landmark re-crop passes after the detector's crop (0: the detector's
      crop only).
  Returns:
    JSON-ready dict: ``detection_rate`` (0 to 1), ``n_images``, ``n_detected``,
    ``original`` / ``reannotated`` (NME % over the detected faces after ``refine``
    passes: ``bins``, ``mean_of_bins``, ``mean``, ``n``), ``passes`` (the same for
    every pass, 0 = the detector's crop), ``gt_roi`` (the same on ground-truth ROI
    crops of the same images), ``missed`` (file names), ``seconds``.
  """
  images_dir = Path(images_dir) if images_dir else ds.root / aflw2000.FULL_IMAGES
  if not images_dir.is_dir():
    raise DaslError(f'--aflw2000_images {images_dir}: folder not found (the 2,000 original '
                    'AFLW2000-3D images, imageNNNNN.jpg)')
  missing = [n for n in ds.names[:5] if not (images_dir / n).exists()]
  if missing:
    raise DaslError(f'--aflw2000_images {images_dir}: no {missing[0]} there (expected the '
                    'original images named as in AFLW2000-3D_crop.list)')
  if refine < 0:
    raise DaslError(f'--refine must be >= 0, got {refine}')
  t0 = time.perf_counter()
  found, rois, crops = [], [], []
  for i, name in enumerate(tqdm(ds.names, desc=f'detect ({detector_name or "detector"})',
                                unit='img', disable=not progress)):
    image = load_image(images_dir / name)
    dets = detector.detections(image)
    boxes = np.asarray([d.box for d in dets], np.float64).reshape(-1, 5)
    k = pick_face(boxes, ds.pts68[i]) if len(boxes) else None
    if k is None:
      continue
    roi = C.roi_box_from_bbox(boxes[k])
    found.append(i)
    rois.append(roi)
    crops.append(C.crop_faces(image, roi[None])[0])
  t_detect = time.perf_counter() - t0
  idx = np.asarray(found, np.int64)
  res = {'detector': detector_name, 'n_images': len(ds), 'n_detected': int(len(idx)),
         'detection_rate': len(idx) / max(len(ds), 1), 'refine': int(refine),
         'backend': predictor.describe(),
         'missed': [ds.names[i] for i in sorted(set(range(len(ds))) - set(found))]}
  if len(idx) == 0:
    raise DaslError(f'{images_dir}: the detector found none of the annotated faces')
  yaws = ds.yaws_of(yaw_file)[idx]
  rois = np.stack(rois)
  get = lambda ii, c=np.stack(crops): c[ii]  # noqa: E731
  passes = []
  for p in range(refine + 1):
    if p:  # cut again around the previous pass's landmarks (3DDFA's landmark rule)
      rois = C.roi_box_from_landmarks(lms)
      get = _recrop(images_dir, [ds.names[i] for i in idx], rois)
    out = predictor.predict_many(get, len(idx), batch_size=batch_size, progress=progress,
                                 desc=f'predict (pass {p}: '
                                      f'{"detector crops" if p == 0 else "landmark crops"})')
    lms = metrics.crop_to_image_landmarks(out['lms68'], rois)
    passes.append(_scores(ds, idx, lms, yaws))
  res.update(passes[-1])
  res['passes'] = passes
  flm = 'bootstrap' if predictor.in_channels == 4 else 'detector'
  ref = protocols.predict_aflw2000(predictor, ds, idx, flm, batch_size, progress)
  res['gt_roi'] = _scores(ds, idx, ref.lms68, yaws)
  res['flm'] = (f'bootstrap x{predictor.bootstrap_iters}' if predictor.in_channels == 4
                else None)
  res['seconds'] = {'detect_and_crop': t_detect, 'total': time.perf_counter() - t0}
  return res


def _recrop(images_dir, names, rois):
  """index array -> crops of ``rois`` cut from the full images again (read per batch:
  the images are not all kept in memory)."""
  def get(ii):
    return np.stack([C.crop_faces(load_image(images_dir / names[i]), rois[i][None])[0]
                     for i in ii])
  return get


def format_full_images(res) -> str:
  """The table: detected faces with the detector's crops (each refine pass), and with
  the GT ROI crops."""
  refine = res.get('refine', 0)
  lines = [f'AFLW2000-3D full images, detector {res["detector"]}: {res["n_detected"]} of '
           f'{res["n_images"]} annotated faces found (detection rate '
           f'{100 * res["detection_rate"]:.1f}%), NME (%) over the found faces; '
           f'{res.get("backend", "")}']
  rows = {}
  passes = res.get('passes') or [res]
  for gt in ('original', 'reannotated'):
    for p, r in enumerate(passes):
      if gt in r:
        rows[f'{gt} ({"det crop" if p == 0 else f"refine {p}"})'] = r[gt]
    if gt in res['gt_roi']:
      rows[f'{gt} (GT ROI)'] = res['gt_roi'][gt]
  head = f'{"":<26}' + ''.join(f'{b:>9}' for b in metrics.BIN_NAMES) + \
      f'{"bins avg":>10}{"mean":>8}{"n":>6}'
  lines.append(head)
  for k, r in rows.items():
    lines.append(f'{k:<26}' + ''.join(f'{b:9.3f}' for b in r['bins']) +
                 f'{r["mean_of_bins"]:10.3f}{r["mean"]:8.3f}{r["n"]:6d}')
  if refine:
    o, g = res['original']['mean_of_bins'], res['gt_roi']['original']['mean_of_bins']
    lines.append(f'after --refine {refine}: {o:.3f} against {g:.3f} on the ground-truth crops '
                 f'(original GT, mean of bins; gap {o - g:+.3f})')
  return '\n'.join(lines)
