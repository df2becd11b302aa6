"""Readers of the real layouts: values against independent numpy re-derivations,
and every kind of bad input (error naming file and row, or skipped and counted)."""
import pickle

import cv2
import numpy as np
import pytest

from tests.helpers import dataset_files
from tests.helpers.asset_marks import asset_path, requires_assets
from dasl_jax.data import readers as R
from dasl_jax.errors import DaslError
from dasl_jax.io.landmark_files import read_landmark_file

# The 18 points written out again from the paper (METHOD.md section 3), 0-based.
SEL18_SPEC = [17, 19, 21, 22, 24, 26, 36, (37, 40), 39, 42, (43, 46), 45, 31, 30, 35,
              48, (62, 66), 54]


def sel18_ref(p68):
  return np.stack([p68[list(s)].mean(0) if isinstance(s, tuple) else p68[s] for s in SEL18_SPEC])


@pytest.fixture
def train_aug(tmp_path):
  return dataset_files.write_train_aug(tmp_path / 'lp', n=8)


def _source(d, **kw):
  args = dict(landmark_file=d['landmark_file'])
  args.update(kw)
  return R.TrainAugSource(d['image_dir'], d['list_file'], d['params_file'], d['stats'],
                          d['model'], 'v1', **args)


def test_train_aug_values(train_aug):
  d = train_aug
  src = _source(d)
  assert len(src) == 8 and not src.skipped
  for i in (0, 5):
    ex = src[i]
    assert ex['image'].dtype == np.uint8 and ex['image'].shape == (120, 120, 3)
    np.testing.assert_array_equal(ex['image'], cv2.imread(str(d['image_dir'] / d['names'][i])))
    np.testing.assert_array_equal(ex['params'], d['whitened'][i])
    np.testing.assert_allclose(ex['lms68'], dataset_files.lms68_v1(d['model'], d['params'][i]),
                               atol=2e-3)
    np.testing.assert_allclose(ex['points18'], sel18_ref(d['detections'][i]), atol=1e-3)
    np.testing.assert_array_equal(ex['mask18'], np.ones(18))


def test_train_aug_without_landmark_file_uses_ground_truth(train_aug):
  src = _source(train_aug, landmark_file=None)
  ex = src[2]
  np.testing.assert_allclose(ex['points18'], sel18_ref(ex['lms68']), atol=1e-4)


def test_missing_image(train_aug):
  d = train_aug
  (d['image_dir'] / d['names'][3]).unlink()
  with pytest.raises(DaslError, match=r'train_aug_120x120.list.train: row 3 .*not found'):
    _source(d)
  src = _source(d, skip_bad_rows=True)
  assert len(src) == 7 and list(src.skipped) == [3]
  np.testing.assert_array_equal(src[3]['params'], d['whitened'][4])  # rows shift past 3


def test_unreadable_jpeg_replaced_by_next(train_aug):
  d = train_aug
  (d['image_dir'] / d['names'][2]).write_bytes(b'\xff\xd8 not a jpeg')
  src = _source(d)  # a decode error only shows at read time
  with pytest.raises(DaslError, match=r'row 2 .*cannot decode'):
    src[2]
  src = _source(d, skip_bad_rows=True)
  ex = src[2]
  np.testing.assert_array_equal(ex['params'], d['whitened'][3])
  assert src.read_errors == 1
  np.testing.assert_array_equal(src[2]['params'], d['whitened'][3])  # same again, counted once
  assert src.read_errors == 1


def test_fewer_labels_than_list(train_aug):
  d = train_aug
  with open(d['params_file'], 'wb') as f:
    pickle.dump(d['whitened'][:6], f)
  with pytest.raises(DaslError, match=r'param_all_norm.pkl: row 6 .*no label'):
    _source(d)
  assert sorted(_source(d, skip_bad_rows=True).skipped) == [6, 7]


def test_nan_label(train_aug):
  d = train_aug
  w = d['whitened'].copy()
  w[5, 20] = np.nan
  with open(d['params_file'], 'wb') as f:
    pickle.dump(w, f)
  with pytest.raises(DaslError, match=r'param_all_norm.pkl: row 5 .*NaN'):
    _source(d)
  assert list(_source(d, skip_bad_rows=True).skipped) == [5]


def test_landmarks_outside_crop(train_aug):
  d = train_aug
  lines = d['landmark_file'].read_text().splitlines()
  f = lines[1].split(',')
  f[1 + 2 * 30] = '400.0'  # x of point 30 (nose tip, one of the 18), far right of the crop
  lines[1] = ','.join(f)
  d['landmark_file'].write_text('\n'.join(lines) + '\n')
  with pytest.raises(DaslError, match=r'landmarks.txt: row 1 .*outside the crop'):
    _source(d)
  assert list(_source(d, skip_bad_rows=True).skipped) == [1]
  assert len(_source(d, tolerance=5.0)) == 8  # the tolerance is a knob


def test_landmark_file_errors(tmp_path):
  f = tmp_path / 'bad.txt'
  f.write_text('a.jpg,' + ','.join(['1'] * 10) + '\n')
  with pytest.raises(DaslError, match=r'bad.txt: line 1: 10 numbers'):
    read_landmark_file(f)
  f.write_text('a.jpg,' + ','.join(['1'] * 36) + '\nb.jpg,' + ','.join(['1'] * 42) + '\n')
  with pytest.raises(DaslError, match=r'line 2: 21 points, earlier lines have 18'):
    read_landmark_file(f)


@pytest.mark.parametrize('k,size', [(21, 240), (68, 120), (18, 60)])
def test_wild_folder(tmp_path, k, size):
  d = dataset_files.write_wild_folder(tmp_path / 'w', n=4, k=k, size=size, header=(k == 21))
  src = R.WildFolderSource(d['root'], d['landmark_file'])
  assert len(src) == 4
  ex = src[1]
  assert ex['image'].shape == (120, 120, 3)
  s = 120.0 / size
  pts = d['points'][1]
  if k == 21:  # AFLW 21 without ears (12, 16) and chin (20); point 1 invisible
    keep = [i for i in range(21) if i not in (12, 16, 20)]
    ref, vis = pts[keep] * s, np.array([0.0 if i == 1 else 1.0 for i in keep])
  elif k == 68:  # point 1 is a jaw point, in none of the 18
    ref, vis = sel18_ref(pts) * s, np.ones(18)
  else:
    ref, vis = pts * s, np.array([0.0 if i == 1 else 1.0 for i in range(18)])
  np.testing.assert_array_equal(ex['mask18'], vis)
  np.testing.assert_allclose(ex['points18'][vis > 0], ref[vis > 0], atol=1e-3)
  expected_img = cv2.resize(cv2.imread(str(d['root'] / d['names'][1])), (120, 120),
                            interpolation=cv2.INTER_AREA)
  np.testing.assert_array_equal(ex['image'], expected_img)


@requires_assets('aflw-wild', 'pts21.npy')
def test_aflw_wild_real():
  root = asset_path('aflw-wild')
  with pytest.raises(DaslError, match=r'list.txt: row 30 .*outside the crop'):
    R.AflwWildSource(root)
  src = R.AflwWildSource(root, skip_bad_rows=True)
  assert sorted(src.skipped) == [30, 3300] and len(src) == 6358
  pts = np.load(root / 'pts21.npy')
  roi = np.load(root / 'roi_box.npy').astype(np.float64)
  names = (root / 'list.txt').read_text().split()
  for i in (0, 100):  # index 100 is file row 101 (row 30 skipped)
    row = i if i < 30 else i + 1
    x, y = pts[row, 0].astype(np.float64), pts[row, 1].astype(np.float64)
    sx, sy, ex_, ey = roi[row]
    cx, cy = (x - sx) * 120 / (ex_ - sx), (y - sy) * 120 / (ey - sy)
    keep = [j for j in range(21) if j not in (12, 16, 20)]
    vis = (x[keep] != -1).astype(np.float32)
    e = src[i]
    np.testing.assert_array_equal(e['mask18'], vis)
    np.testing.assert_allclose(e['points18'][vis > 0],
                               np.stack([cx, cy], 1)[keep][vis > 0], atol=1e-3)
    np.testing.assert_array_equal(e['image'], cv2.imread(str(root / 'images' / names[row])))


@requires_assets('aflw2000-3d', 'detect_testData_1998.txt')
def test_aflw2000_real():
  root = asset_path('aflw2000-3d')
  src = R.Aflw2000Source(root)
  assert len(src) == 1998
  crop_list = (root / 'AFLW2000-3D_crop.list').read_text().split()
  lines = (root / 'detect_testData_1998.txt').read_text().splitlines()
  gt = np.load(root / 'test.configs' / 'AFLW2000-3D.pts68.npy').astype(np.float64)
  roi = np.load(root / 'test.configs' / 'AFLW2000-3D_crop.roi_box.npy').astype(np.float64)
  for r in (0, 1500):
    f = lines[r].split(',')
    k = crop_list.index(f[0])
    det = np.asarray(f[1:], np.float64).reshape(68, 2)
    sx, sy, ex_, ey = roi[k]
    ref = np.stack([(gt[k, 0] - sx) * 120 / (ex_ - sx), (gt[k, 1] - sy) * 120 / (ey - sy)], 1)
    e = src[r]
    np.testing.assert_allclose(e['lms68'], ref, atol=1e-3)
    np.testing.assert_allclose(e['points18'], sel18_ref(det), atol=1e-4)
  assert 1081 not in src.index and 1798 not in src.index
