"""Detection and cropping: 3DDFA's ROI rules, the zero-padded crop, NMS, box files."""
import json

import cv2
import numpy as np
import pytest

from dasl_jax.geometry import crop as C
from dasl_jax.inference import detect as D
from dasl_jax.errors import DaslError
from tests.helpers.asset_marks import requires_assets


def _v2_roi_reference(bbox):
  # 3DDFA_V2 utils/functions.py parse_roi_box_from_bbox, transcribed literally.
  left, top, right, bottom = bbox[:4]
  old_size = (right - left + bottom - top) / 2
  center_x = right - (right - left) / 2.0
  center_y = bottom - (bottom - top) / 2.0 + old_size * 0.14
  size = int(old_size * 1.58)
  return [center_x - size / 2, center_y - size / 2, center_x + size / 2,
          center_y + size / 2]


def test_roi_box_from_bbox_matches_3ddfa_v2(rng):
  boxes = rng.uniform(0, 500, (20, 2))
  boxes = np.concatenate([boxes, boxes + rng.uniform(20, 300, (20, 2))], 1)
  got = C.roi_box_from_bbox(boxes)
  want = np.array([_v2_roi_reference(b) for b in boxes])
  np.testing.assert_allclose(got, want, atol=1e-9)
  np.testing.assert_allclose(C.roi_box_from_bbox(np.append(boxes[0], 0.9)), want[0])


@requires_assets('aflw2000-3d', 'test.configs', 'AFLW2000-3D_crop.roi_box.npy')
def test_roi_box_from_landmarks_reproduces_aflw2000_boxes(assets):
  # The benchmark's crop boxes were made from the GT landmarks with 3DDFA v1's
  # rule; the published file rounds them to integers.
  t = assets / 'aflw2000-3d' / 'test.configs'
  pts = np.load(t / 'AFLW2000-3D.pts68.npy')[:, :2].transpose(0, 2, 1)
  roi = np.load(t / 'AFLW2000-3D_crop.roi_box.npy')
  got = C.roi_box_from_landmarks(pts)
  err = np.abs(got - roi)
  assert np.median(err) < 0.5 and np.percentile(err, 99) <= 1.0, err.max()


def test_crop_zero_pads_and_resizes():
  img = np.arange(40 * 50 * 3, dtype=np.uint8).reshape(40, 50, 3)
  roi = (-10.2, 5.4, 30.1, 45.6)  # rounds to (-10, 5, 30, 46): sticks out left and bottom
  got = C.crop_image(img, roi, size=40)
  # Independent reference: a pixel loop over the rounded box.
  ref = np.zeros((41, 40, 3), np.uint8)
  for yy in range(41):
    for xx in range(40):
      y, x = 5 + yy, -10 + xx
      if 0 <= y < 40 and 0 <= x < 50:
        ref[yy, xx] = img[y, x]
  np.testing.assert_array_equal(got, cv2.resize(ref, (40, 40), interpolation=cv2.INTER_LINEAR))
  assert C.crop_faces(img, np.zeros((0, 4))).shape == (0, 120, 120, 3)
  with pytest.raises(DaslError, match='empty'):
    C.crop_image(img, (5, 5, 5, 9))


@requires_assets('aflw2000-3d', 'originals', 'image00002.jpg')
def test_crop_matches_published_aflw2000_crop(assets):
  root = assets / 'aflw2000-3d'
  names = (root / 'AFLW2000-3D_crop.list').read_text().split()
  roi = np.load(root / 'test.configs' / 'AFLW2000-3D_crop.roi_box.npy')
  for i in (0, 20):  # originals are every 20th image of the list
    img = cv2.imread(str(root / 'originals' / names[i]))
    got = C.crop_image(img, roi[i]).astype(np.float32)
    ref = cv2.imread(str(root / 'AFLW2000-3D_crop' / names[i])).astype(np.float32)
    assert np.abs(got - ref).mean() < 6.0  # JPEG re-encoding of the published crop


def test_nms_keeps_best_of_overlaps():
  boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], float)
  scores = np.array([0.5, 0.9, 0.3, 0.1])
  np.testing.assert_array_equal(D.nms(boxes, scores, 0.3), [1, 2])
  assert D.nms(np.zeros((0, 4)), np.zeros(0)).size == 0


def test_calibrate_boxes():
  raw = np.array([[10, 20, 110, 120]], float)
  got = D.calibrate_boxes(raw, scale=0.5, dx=0.1, dy=-0.2)
  np.testing.assert_allclose(got, [[60 + 10 - 25, 70 - 20 - 25, 60 + 10 + 25, 70 - 20 + 25]])


def test_haar_detector_blank_image_finds_nothing():
  assert D.HaarDetector().detect(np.full((200, 300, 3), 128, np.uint8)) == []


@requires_assets('images', 'trump_hillary.jpg')
def test_haar_detector_finds_both_faces(assets):
  img = cv2.imread(str(assets / 'images' / 'trump_hillary.jpg'))
  dets = D.HaarDetector(max_side=640).detect(img)  # smaller: faster
  centres = sorted(((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2) for d in dets)
  # Two faces, one in each half of the 1536-wide frame, in the upper half.
  assert len(dets) == 2, [d.box for d in dets]
  assert centres[0][0] < 768 < centres[1][0]
  assert all(60 < cy < 400 for _, cy in centres)


def test_load_boxes_json_and_csv(tmp_path):
  j = tmp_path / 'b.json'
  j.write_text(json.dumps({'dir/a.jpg': [[1, 2, 30, 40, 0.5], [5, 5, 9, 9]],
                           'b.jpg': [0, 0, 4, 4]}))
  got = D.load_boxes(j)
  np.testing.assert_allclose(got['a.jpg'], [[1, 2, 30, 40, 0.5], [5, 5, 9, 9, 1]])
  np.testing.assert_allclose(got['b.jpg'], [[0, 0, 4, 4, 1]])
  c = tmp_path / 'b.csv'
  c.write_text('image,x1,y1,x2,y2,score\na.jpg,1,2,30,40,0.7\na.jpg,3,3,8,8\n')
  np.testing.assert_allclose(D.load_boxes(c)['a.jpg'], [[1, 2, 30, 40, 0.7], [3, 3, 8, 8, 1]])
  c.write_text('a.jpg,1,2,30\n')
  with pytest.raises(DaslError, match='row 1'):
    D.load_boxes(c)
  c.write_text('a.jpg,10,2,3,40\n')
  with pytest.raises(DaslError, match='x2 <= x1'):
    D.load_boxes(c)
  with pytest.raises(DaslError, match='not found'):
    D.load_boxes(tmp_path / 'missing.json')


def test_load_landmarks_text_and_json(tmp_path, rng):
  pts = rng.uniform(0, 100, (2, 68, 2)).round(1)
  f = tmp_path / 'l.txt'
  f.write_text('\n'.join('x.jpg,' + ','.join(map(str, p.reshape(-1))) for p in pts) + '\n')
  np.testing.assert_allclose(D.load_landmarks(f)['x.jpg'], pts, rtol=1e-6)
  j = tmp_path / 'l.json'
  j.write_text(json.dumps({'y.png': pts[0].tolist()}))
  np.testing.assert_allclose(D.load_landmarks(j)['y.png'], pts[:1], rtol=1e-6)
  f.write_text('x.jpg,1,2,3\n')
  with pytest.raises(DaslError, match='line 1'):
    D.load_landmarks(f)


def test_load_boxes_reference_layout_and_bad_schemas(tmp_path):
  # faceboxes_reference.json's layout: {"about": text, "boxes": {relative path: boxes}},
  # an image with no face listed as [].
  j = tmp_path / 'ref.json'
  j.write_text(json.dumps({'about': 'FaceBoxes through 3DDFA_V2', 'boxes': {
      'images/emma.jpg': [[1699.8, 278.5, 2057.8, 762.4, 1.0], [317.3, 399.8, 792.7, 1048.3, 0.9]],
      'aflw2000-3d/AFLW2000/image00004.jpg': []}}))
  got = D.load_boxes(j)
  assert sorted(got) == ['emma.jpg', 'image00004.jpg']
  np.testing.assert_allclose(got['emma.jpg'], [[1699.8, 278.5, 2057.8, 762.4, 1.0],
                                               [317.3, 399.8, 792.7, 1048.3, 0.9]])
  assert got['image00004.jpg'].shape == (0, 5)
  j.write_text(json.dumps([{'image': 'a.jpg', 'box': [1, 2, 3, 4], 'score': 0.25}]))
  np.testing.assert_allclose(D.load_boxes(j)['a.jpg'], [[1, 2, 3, 4, 0.25]])
  # Anything else: one line that says what was expected (no KeyError, no TypeError).
  for bad, where in (({'about': 'x', 'boxes': {'a.jpg': 'zz'}}, "entry 'a.jpg' holds str"),
                     ({'a.jpg': {'0': [1, 2, 3, 4]}}, "entry 'a.jpg' holds dict"),
                     ({'a.jpg': 3}, "entry 'a.jpg' holds int"),
                     ({'a.jpg': [[1, 2, 3, 4], 'x']}, "entry 'a.jpg': expected a list"),
                     ('boxes', 'expected JSON {"img.jpg"'),
                     ([[1, 2, 3, 4]], 'item 0 is not')):
    j.write_text(json.dumps(bad))
    with pytest.raises(DaslError) as e:
      D.load_boxes(j)
    msg = str(e.value)
    assert msg.startswith(f'--boxes {j}') and where in msg and '\n' not in msg, msg
    assert '"boxes" key' in msg or 'expected a list' in msg, msg


@requires_assets('pretrained', 'faceboxes_reference.json')
def test_load_boxes_reads_the_faceboxes_reference(assets):
  ref = json.loads((assets / 'pretrained' / 'faceboxes_reference.json').read_text())['boxes']
  got = D.load_boxes(assets / 'pretrained' / 'faceboxes_reference.json')
  assert len(got) == len(ref)
  np.testing.assert_allclose(got['trump_hillary.jpg'], ref['images/trump_hillary.jpg'])
  assert sum(len(v) == 0 for v in got.values()) == sum(not v for v in ref.values())
