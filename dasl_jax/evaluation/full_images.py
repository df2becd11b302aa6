"""AFLW2000-3D from the full images: a detector, not the ground-truth box, picks
the crop (what a user of ``experiments.predict`` gets on a photograph).

For each of the original images (``AFLW2000/imageNNNNN.jpg``): detect faces,
take the detection whose box contains the centre of the ground-truth 68 points
(the highest-scoring one if several do; none: the face counts as missed), crop by
3DDFA_V2's box rule (``geometry.crop.roi_box_from_bbox``), predict, and score the
68 landmarks in image pixels with the usual protocol (``evaluation.protocols``).
The same model on the ground-truth ROI crops of the same detected images is the
reference (``gt_roi``): the difference is what the detector costs.
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

  Args:
    boxes: (F, 5) x1, y1, x2, y2, score; gt68: (68, 2) ground truth.
  Returns:
    the highest-scoring box that contains the ground truth's centre, else None.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
  c = np.asarray(gt68, np.float64).mean(axis=0)
  inside = ((boxes[:, 0] <= c[0]) & (c[0] <= boxes[:, 2]) &
            (boxes[:, 1] <= c[1]) & (c[1] <= boxes[:, 3]))
  if not inside.any():
    return None
  return int(np.flatnonzero(inside)[np.argmax(boxes[inside, 4])])


def _scores(ds, idx, lms_image, yaws):
  out = {'original': metrics.binned_summary(metrics.nme(lms_image, ds.pts68[idx]), yaws)}
  if ds.reannotated is not None:
    out['reannotated'] = metrics.binned_summary(metrics.nme(lms_image, ds.reannotated[idx]),
                                                yaws)
  return out


def evaluate_full_images(predictor, detector, ds: aflw2000.AFLW2000, images_dir=None,
                         detector_name='', batch_size=64, yaw_file='default', progress=True):
  """Detection rate and NME of ``predictor`` on the full AFLW2000-3D images.

  Args:
    predictor: ``inference.Predictor`` (4-channel models bootstrap their FLM:
      a detector gives no landmarks).
    detector: anything with ``detections(image) -> [Detection]``
      (``inference.make_detector``).
    images_dir: the full images (default ``<root>/AFLW2000``).
  Returns:
    JSON-ready dict: ``detection_rate`` (0 to 1), ``n_images``, ``n_detected``,
    ``original`` / ``reannotated`` (NME % over the detected faces: ``bins``,
    ``mean_of_bins``, ``mean``, ``n``), ``gt_roi`` (the same on ground-truth ROI
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
         'detection_rate': len(idx) / max(len(ds), 1),
         'missed': [ds.names[i] for i in sorted(set(range(len(ds))) - set(found))]}
  if len(idx) == 0:
    raise DaslError(f'{images_dir}: the detector found none of the annotated faces')
  yaws = ds.yaws_of(yaw_file)[idx]
  out = predictor.predict_many(np.stack(crops), len(idx), batch_size=batch_size,
                               progress=progress, desc='predict (detected crops)')
  rois = np.stack(rois)
  lms = metrics.crop_to_image_landmarks(out['lms68'], rois)
  res.update(_scores(ds, idx, lms, yaws))
  flm = 'bootstrap' if predictor.in_channels == 4 else 'detector'
  ref = protocols.predict_aflw2000(predictor, ds, idx, flm, batch_size, progress)
  res['gt_roi'] = _scores(ds, idx, ref.lms68, yaws)
  res['flm'] = (f'bootstrap x{predictor.bootstrap_iters}' if predictor.in_channels == 4
                else None)
  res['seconds'] = {'detect_and_crop': t_detect, 'total': time.perf_counter() - t0}
  return res


def format_full_images(res) -> str:
  """The table: detected faces with the detector's crops, and with the GT ROI crops."""
  lines = [f'AFLW2000-3D full images, detector {res["detector"]}: {res["n_detected"]} of '
           f'{res["n_images"]} annotated faces found (detection rate '
           f'{100 * res["detection_rate"]:.1f}%), NME (%) over the found faces']
  rows = {f'{gt} (det crop)': res[gt] for gt in ('original', 'reannotated') if gt in res}
  rows.update({f'{gt} (GT ROI)': res['gt_roi'][gt] for gt in ('original', 'reannotated')
               if gt in res['gt_roi']})
  head = f'{"":<26}' + ''.join(f'{b:>9}' for b in metrics.BIN_NAMES) + \
      f'{"bins avg":>10}{"mean":>8}{"n":>6}'
  lines.append(head)
  for k, r in rows.items():
    lines.append(f'{k:<26}' + ''.join(f'{b:9.3f}' for b in r['bins']) +
                 f'{r["mean_of_bins"]:10.3f}{r["mean"]:8.3f}{r["n"]:6d}')
  return '\n'.join(lines)
