"""AFLW2000-3D from the full images (a detector picks the crop).

The reference is built independently of our detector and cropping code: the boxes
the original PyTorch FaceBoxes gives (``faceboxes_reference.json``), 3DDFA_V2's
box rule written out here in numpy, and the NME written out per image.
"""
import dataclasses
import json

import cv2
import numpy as np

from dasl_jax.evaluation import aflw2000
from dasl_jax.evaluation.full_images import evaluate_full_images, pick_face
from tests.helpers.asset_marks import asset_path, requires_assets


def test_pick_face_takes_the_box_of_the_annotated_face():
  gt = np.array([[100.0, 100.0], [140.0, 160.0]])  # box 40 x 60, centre (120, 130)
  boxes = np.array([[0, 0, 50, 50, 0.99],        # elsewhere
                    [95, 95, 145, 165, 0.80],     # around the face: IoU 0.69
                    [110, 80, 210, 180, 0.95],    # a neighbour reaching over the centre: 0.2
                    [115, 125, 118, 128, 0.99]])  # misses the centre
  assert pick_face(boxes, gt) == 1  # not the neighbour's higher score (image03216)
  assert pick_face(boxes[[0, 2, 3]], gt) == 1  # the only box around the centre
  assert pick_face(boxes[[0, 3]], gt) is None


def _slice(ds, n):
  cut = lambda a: None if a is None else a[:n]  # noqa: E731
  return dataclasses.replace(
      ds, names=ds.names[:n], roi_boxes=ds.roi_boxes[:n], pts68=ds.pts68[:n],
      reannotated=cut(ds.reannotated), yaws=ds.yaws[:n], detector68=cut(ds.detector68),
      has_detection=ds.has_detection[:n], pts68_3d=cut(ds.pts68_3d), new_yaws=cut(ds.new_yaws))


@requires_assets('aflw2000-3d', 'AFLW2000', 'image00002.jpg')
@requires_assets('pretrained', 'faceboxes_reference.json')
@requires_assets('pretrained', 'FaceBoxesProd.pth')
@requires_assets('bfm', 'keypoints68', 'u_base.txt')
def test_full_images_match_a_reference_from_the_original_boxes(tmp_path):
  from dasl_jax import inference
  from dasl_jax.io import checkpoint
  from tests.helpers.random_models import make_checkpoint  # a small random 3-channel model
  ds = _slice(aflw2000.load(asset_path('aflw2000-3d')), 24)
  restored = checkpoint.restore(make_checkpoint(tmp_path / 'm', in_channels=3, convention='v2'))
  pred = inference.Predictor(restored, inference.face_models(restored).landmarks, batch_size=8)
  res = evaluate_full_images(pred, inference.make_detector('faceboxes'), ds,
                             detector_name='faceboxes', batch_size=8, progress=False, refine=1)
  # Reference: the original code's boxes, the face = the box around the GT centre that
  # overlaps the GT's box most.
  ref = json.loads(asset_path('pretrained', 'faceboxes_reference.json').read_text())['boxes']
  rows, crops, rois = [], [], []
  for i, name in enumerate(ds.names):
    boxes = [b for b in ref.get(f'aflw2000-3d/AFLW2000/{name}', [])
             if b[0] <= ds.pts68[i, :, 0].mean() <= b[2] and b[1] <= ds.pts68[i, :, 1].mean() <= b[3]]
    if not boxes:
      continue
    lo, hi = ds.pts68[i].min(0), ds.pts68[i].max(0)

    def iou(b):
      w = max(0, min(b[2], hi[0]) - max(b[0], lo[0]))
      h = max(0, min(b[3], hi[1]) - max(b[1], lo[1]))
      return w * h / ((b[2] - b[0]) * (b[3] - b[1]) + (hi - lo).prod() - w * h)
    x1, y1, x2, y2, _ = max(boxes, key=iou)
    old = (x2 - x1 + y2 - y1) / 2  # 3DDFA_V2's parse_roi_box_from_bbox
    cx, cy = x2 - (x2 - x1) / 2, y2 - (y2 - y1) / 2 + old * 0.14
    size = int(old * 1.58)
    roi = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    img = cv2.imread(str(asset_path('aflw2000-3d', 'AFLW2000', name)))
    rows.append(i)
    rois.append(roi)
    crops.append(img)
  assert res['n_detected'] == len(rows) and res['detection_rate'] == len(rows) / 24
  assert len(rows) >= 20
  # The model's landmarks on the reference crops (our crop function: the crop itself is
  # checked against 3DDFA_V2 in tests/geometry/test_detect_crop.py), scored by hand.
  from dasl_jax.geometry import crop as C
  c = np.stack([C.crop_faces(im, r[None])[0] for im, r in zip(crops, rois)])
  out = pred.predict_crops(c)
  s = (np.stack(rois)[:, 2:] - np.stack(rois)[:, :2]) / 120
  lms = out['lms68'] * s[:, None] + np.stack(rois)[:, None, :2]
  gt = ds.pts68[rows].astype(np.float64)
  wh = gt.max(1) - gt.min(1)
  nme = np.linalg.norm(lms - gt, axis=-1).mean(1) / np.sqrt(wh[:, 0] * wh[:, 1]) * 100
  # Boxes agree with the original within 1 px, so the NME within a small margin.
  assert abs(res['passes'][0]['original']['mean'] - nme.mean()) < 0.05 * nme.mean()
  assert res['gt_roi']['original']['n'] == len(rows)
  # The refine pass: 3DDFA's landmark crop of those landmarks (sqrt(2) x the longer
  # side of their box, same centre), typed here again.
  lo, hi = lms.min(1), lms.max(1)
  side = np.sqrt(2) * (hi - lo).max(1)
  roi2 = np.concatenate([(lo + hi) / 2 - side[:, None] / 2, (lo + hi) / 2 + side[:, None] / 2], 1)
  c2 = np.stack([C.crop_faces(im, r[None])[0] for im, r in zip(crops, roi2)])
  s2 = (roi2[:, 2:] - roi2[:, :2]) / 120
  lms2 = pred.predict_crops(c2)['lms68'] * s2[:, None] + roi2[:, None, :2]
  nme2 = np.linalg.norm(lms2 - gt, axis=-1).mean(1) / np.sqrt(wh[:, 0] * wh[:, 1]) * 100
  assert abs(res['original']['mean'] - nme2.mean()) < 0.05 * nme2.mean()
  assert res['refine'] == 1 and len(res['passes']) == 2 and res['backend'].startswith('jax')
