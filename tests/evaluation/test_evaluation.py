"""Evaluation protocols against hand-computed values, the AFLW2000-3D loader, and
the evaluate command on the published reference outputs of 3DDFA_V2's mb05."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dasl_jax import evaluation as E
from dasl_jax.evaluation import aflw2000
from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError
from tests.helpers.asset_marks import asset_path, requires_assets

REPO = Path(__file__).resolve().parents[2]
AFLW = asset_path('aflw2000-3d')
REF_LMS = asset_path('pretrained', 'mb05_reference_lms68_crop.npy')
REF_PARAMS = asset_path('pretrained', 'mb05_reference_params62.npy')
V2_STATS = asset_path('pretrained', 'param_mean_std_62d_120x120.pkl')
needs_reference = [requires_assets('aflw2000-3d', 'AFLW2000-3D_crop.list'),
                   requires_assets('pretrained', 'mb05_reference_lms68_crop.npy')]


def test_nme_by_hand():
  gt = np.array([[[0, 0], [4, 0], [4, 9]]], np.float64)  # box 4 x 9 -> sqrt = 6
  pred = gt + np.array([[[3, 4], [0, 0], [0, 1]]])  # errors 5, 0, 1 -> mean 2
  np.testing.assert_allclose(E.nme(pred, gt), [2 / 6])
  # Masked: the third point invisible -> box of the first two is 4 x 0... use a 2-D box.
  gt2 = np.array([[[0, 0], [2, 8], [100, 100]]], np.float64)  # visible box 2 x 8 -> 4
  pred2 = gt2 + np.array([[[0, 2], [0, 4], [50, 50]]])  # visible errors 2, 4 -> 3
  np.testing.assert_allclose(E.nme(pred2, gt2, visible=[[1, 1, 0]]), [3 / 4])
  with pytest.raises(DaslError):
    E.nme(np.zeros((2, 68, 2)), np.zeros((2, 21, 2)))


def test_yaw_bins_and_summary():
  yaws = np.array([0, 30, -30.01, 60, -60, 60.5, -89, 10])
  np.testing.assert_array_equal(E.yaw_bins(yaws), [0, 0, 1, 1, 1, 2, 2, 0])
  errors = np.array([0.01, 0.03, 0.02, 0.04, 0.06, 0.08, 0.10, 0.02])
  s = E.binned_summary(errors, yaws)
  np.testing.assert_allclose(s['bins'], [2.0, 4.0, 9.0])
  assert s['mean_of_bins'] == pytest.approx(5.0)
  assert s['mean'] == pytest.approx(errors.mean() * 100)
  assert s['n'] == 8 and s['counts'] == [3, 3, 2]


def test_jitter_by_hand():
  """Frame-to-frame jitter: the change of the prediction minus that of the truth."""
  gt = np.array([[[0, 0], [4, 0], [4, 9]]] * 3, np.float64)  # still face, box sqrt(36) = 6
  gt[1:] += [1.0, 0.0]  # the truth moves 1 px right between frames 0 and 1
  pred = gt.copy()
  pred[1] += [[3, 4], [0, 0], [0, 0]]  # frame 1: one point off by 5 px
  # Changes: 0 -> 1: (5, 0, 0) px, 1 -> 2: (5, 0, 0) px; mean 5/3 px per step, / 6.
  assert np.isclose(E.jitter(pred, gt), (5 / 3) / 6)
  assert E.jitter(gt, gt) == 0.0


def test_aflw2000_nme_maps_crop_to_image():
  rng = np.random.default_rng(0)
  gt = rng.uniform(100, 300, (3, 68, 2))
  roi = np.array([[50, 60, 290, 300], [0, 0, 120, 120], [10, 20, 70, 80]], np.float64)
  # Crop coordinates that map exactly onto the GT, then a 1-crop-pixel shift in x.
  scale = (roi[:, 2:] - roi[:, :2]) / 120
  crop = (gt - roi[:, None, :2]) / scale[:, None]
  s, per = E.aflw2000_nme(crop + [1, 0], gt, roi, [0, 45, 70])
  box = np.sqrt(np.ptp(gt[..., 0], 1) * np.ptp(gt[..., 1], 1))
  np.testing.assert_allclose(per, scale[:, 0] / box, rtol=1e-5)
  np.testing.assert_allclose(s['bins'], 100 * scale[:, 0] / box, rtol=1e-5)


def test_aflw21_nme_masks_invisible():
  rng = np.random.default_rng(1)
  pts68 = rng.uniform(0, 100, (2, 68, 2))
  # 21-point GT independently: iBUG (1-based) 18,20,22,23,25,27,37,mean(37..42),40,43,
  # mean(43..48),46,3,32,31,36,15,49,mean(61..68),55,9 (assets README).
  spec = [18, 20, 22, 23, 25, 27, 37, range(37, 43), 40, 43, range(43, 49), 46, 3, 32,
          31, 36, 15, 49, range(61, 69), 55, 9]
  gt21 = np.stack([pts68[:, [i - 1 for i in s]].mean(1) if isinstance(s, range)
                   else pts68[:, s - 1] for s in spec], 1)
  s, per = E.aflw21_nme(pts68, gt21, [10, 80])
  np.testing.assert_allclose(per, 0, atol=1e-5)
  gt21[0, 4] = [-1, 12345]  # invisible: excluded even though far away
  pred = pts68.copy()
  pred[1] += [3, 4]  # every point 5 px off
  s, per = E.aflw21_nme(pred, gt21, [10, 80])
  assert per[0] == pytest.approx(0, abs=1e-5)
  box = np.sqrt(np.ptp(gt21[1, :, 0]) * np.ptp(gt21[1, :, 1]))
  assert per[1] == pytest.approx(5 / box, rel=1e-5)
  assert s['counts'] == [1, 0, 1]


def test_pose_mae_and_conventions():
  pred = np.array([[10, 5, -3], [179, 0, 0], [-40, 20, 2]], np.float64)
  gt = np.array([[12, 5, 0], [-179, 10, 0], [-40, 0, 0]], np.float64)
  m = E.pose_mae(pred, gt)
  assert m['yaw'] == pytest.approx((2 + 2 + 0) / 3)  # 179 vs -179 is 2 degrees
  assert m['pitch'] == pytest.approx(30 / 3) and m['roll'] == pytest.approx(5 / 3)
  assert m['mean'] == pytest.approx((4 / 3 + 10 + 5 / 3) / 3)
  mask = np.array([[1, 0, 0], [1, 1, 1], [1, 0, 0]], bool)
  assert E.pose_mae(pred, gt, mask)['pitch'] == pytest.approx(10) and \
      E.pose_mae(pred, gt, mask)['n'] == [3, 1, 1]
  # Pose_Para's rotation, independently: R^T = Rz(roll) Ry(yaw) Rx(pitch) (scipy).
  rng = np.random.default_rng(0)
  ang = rng.uniform([-80, -60, -60], [80, 60, 60], (20, 3))  # pitch, yaw, roll deg
  want = Rotation.from_euler('ZYX', ang[:, ::-1], degrees=True).as_matrix().transpose(0, 2, 1)
  R = E.rotation_from_pose_para(np.deg2rad(ang))
  np.testing.assert_allclose(R, want, atol=1e-10)
  np.testing.assert_allclose(E.aflw_pose_angles(R), ang[:, [1, 0, 2]], atol=1e-8)


def test_ced_and_auc():
  e = np.array([0.01, 0.02, 0.02, 0.05])
  np.testing.assert_allclose(E.ced(e, [0, 0.01, 0.02, 0.04, 0.1]), [0, .25, .75, .75, 1])
  # AUC up to 0.04: integral of the step CED = (0.03*.25 + 0.02*.5) / 0.04 ... by hand:
  # fraction .25 on [0.01, 0.02), .75 on [0.02, 0.04] -> (0.01*.25 + 0.02*.75) / 0.04
  assert E.ced_auc(e, 0.04) == pytest.approx((0.01 * .25 + 0.02 * .75) / 0.04)
  t, f, s = E.ced_curve(e, 0.04, num=5)
  np.testing.assert_allclose(t, [0, .01, .02, .03, .04])
  np.testing.assert_array_equal(s, np.sort(e))


# --------------------------------------------------------------------------
# The folder loader, on a small folder in the real layout.


def write_aflw(root: Path, n=3, detections=(0, 2), bad_image=None):
  rng = np.random.default_rng(0)
  names = [f'image{i:05d}.jpg' for i in range(n)]
  (root / 'AFLW2000-3D_crop').mkdir(parents=True)
  (root / 'test.configs').mkdir()
  for i, name in enumerate(names):
    img = rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(root / 'AFLW2000-3D_crop' / name), img)
  if bad_image is not None:
    (root / 'AFLW2000-3D_crop' / names[bad_image]).write_bytes(b'not a jpeg')
  (root / 'AFLW2000-3D_crop.list').write_text('\n'.join(names) + '\n')
  np.save(root / 'test.configs/AFLW2000-3D.pts68.npy',
          rng.uniform(0, 200, (n, 3, 68)).astype(np.float32))
  np.save(root / 'test.configs/AFLW2000-3D-Reannotated.pts68.npy',
          rng.uniform(0, 200, (n, 2, 68)).astype(np.float32))
  np.save(root / 'test.configs/AFLW2000-3D_crop.roi_box.npy',
          np.tile(np.float32([0, 0, 240, 240]), (n, 1)))
  np.save(root / 'test.configs/AFLW2000-3D.pose.npy', np.float32([10, -45, 75, 0, 0][:n]))
  det = rng.integers(0, 120, (n, 68, 2))
  lines = [names[i] + ',' + ','.join(f'{v:.1f}' for v in det[i].reshape(-1))
           for i in detections]
  (root / 'detect_testData_1998.txt').write_text('\n'.join(lines[::-1]) + '\n')
  return names, det


def test_loader(tmp_path):
  names, det = write_aflw(tmp_path / 'a')
  ds = aflw2000.load(tmp_path / 'a')
  assert ds.names == names and len(ds) == 3
  assert ds.pts68.shape == (3, 68, 2) and ds.reannotated.shape == (3, 68, 2)
  raw = np.load(tmp_path / 'a/test.configs/AFLW2000-3D.pts68.npy')
  np.testing.assert_array_equal(ds.pts68[1, 5], raw[1, :2, 5])
  np.testing.assert_array_equal(ds.has_detection, [True, False, True])
  np.testing.assert_array_equal(ds.detector68[2], det[2])  # mapped by name, not by line
  assert np.isnan(ds.detector68[1]).all()
  crops = ds.load_crops([0, 2])
  assert crops.shape == (2, 120, 120, 3) and crops.dtype == np.uint8
  np.testing.assert_array_equal(crops[1], cv2.imread(str(ds.crop_path(2))))
  with pytest.raises(DaslError, match='1998'):
    ds.subset_indices(1998)


def test_loader_errors(tmp_path):
  with pytest.raises(DaslError, match='not found'):
    aflw2000.load(tmp_path / 'nothing')
  write_aflw(tmp_path / 'a', bad_image=1)
  ds = aflw2000.load(tmp_path / 'a')
  with pytest.raises(DaslError, match='image00001.jpg: unreadable image'):
    ds.load_crops([0, 1])
  (tmp_path / 'a/AFLW2000-3D_crop/image00002.jpg').unlink()
  with pytest.raises(DaslError, match='image00002.jpg: crop image not found'):
    ds.load_crops([2])
  cv2.imwrite(str(tmp_path / 'a/AFLW2000-3D_crop/image00002.jpg'), np.zeros((60, 60, 3)))
  with pytest.raises(DaslError, match='120x120'):
    ds.load_crops([2])
  np.save(tmp_path / 'a/test.configs/AFLW2000-3D.pose.npy', np.zeros(4, np.float32))
  with pytest.raises(DaslError, match='pose.npy: has 4 rows but .* lists 3'):
    aflw2000.load(tmp_path / 'a')
  write_aflw(tmp_path / 'b')
  with open(tmp_path / 'b/detect_testData_1998.txt', 'a') as f:
    f.write('image00001.jpg,1,2,3\n')
  with pytest.raises(DaslError, match='line 3: 3 numbers after the name'):
    aflw2000.load(tmp_path / 'b')


# --------------------------------------------------------------------------
# The evaluate command.


def _evaluate(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.evaluate', *map(str, args)],
                        cwd=REPO, capture_output=True, text=True, timeout=600)


def _check_published(res, subset=2000):
  o, r = res['original'], res['reannotated']
  assert o['n'] == r['n'] == subset
  if subset == 2000:
    np.testing.assert_allclose(o['bins'], [2.925, 3.667, 4.784], atol=0.005)
    assert abs(o['mean_of_bins'] - 3.792) < 0.005 and abs(o['mean'] - 3.350) < 0.005
    assert abs(r['mean_of_bins'] - 3.022) < 0.005
  else:
    assert abs(o['mean_of_bins'] - 3.782) < 0.005


@pytest.mark.parametrize('subset', [2000, 1998])
@needs_reference[0]
@needs_reference[1]
def test_evaluate_reference_landmarks(tmp_path, subset):
  r = _evaluate('--predictions', REF_LMS, '--aflw2000_dir', AFLW, '--subset', subset,
                '--json', tmp_path / 'r.json')
  assert r.returncode == 0, r.stderr
  assert '[0,30]' in r.stdout and 'reannotated' in r.stdout
  _check_published(json.loads((tmp_path / 'r.json').read_text()), subset)


@needs_reference[0]
@needs_reference[1]
@requires_assets('bfm', 'keypoints68')
def test_evaluate_reference_params(tmp_path):
  stats = P.load_param_stats(V2_STATS)
  np.save(tmp_path / 'pw.npy', stats.whiten(np.load(REF_PARAMS)).astype(np.float32))
  r = _evaluate('--predictions', tmp_path / 'pw.npy', '--param_stats', V2_STATS,
                '--bfm', asset_path('bfm'), '--convention', 'v2', '--aflw2000_dir', AFLW,
                '--json', tmp_path / 'r.json')
  assert r.returncode == 0, r.stderr
  res = json.loads((tmp_path / 'r.json').read_text())
  _check_published(res)
  pose = res['pose']
  # Pitch and roll come from the fitting .mat files: all 2,000 in AFLW2000/ when the
  # assets have it, else the 100 in originals/.
  mats = AFLW / 'AFLW2000'
  mats = mats if any(mats.glob('*.mat')) else AFLW / 'originals'
  n_mat = len(list(mats.glob('*.mat')))
  assert pose['n_all'] == 2000 and pose['originals']['n'] == [n_mat] * 3
  # Independently: scipy decomposes the (orthonormalised) rotation in the ground
  # truth's order, R^T = Rz(roll) Ry(yaw) Rx(pitch); Pose_Para is [pitch, yaw, roll].
  # The project's P2sRt rotation is not exactly orthogonal: allow 0.2 degrees.
  import scipy.io
  p = np.load(REF_PARAMS).astype(np.float64)
  fR = p[:, :12].reshape(-1, 3, 4)[:, :, :3]
  r1 = fR[:, 0] / np.linalg.norm(fR[:, 0], axis=1, keepdims=True)
  r2 = fR[:, 1] / np.linalg.norm(fR[:, 1], axis=1, keepdims=True)
  R = np.stack([r1, r2, np.cross(r1, r2)], 1)
  e = Rotation.from_matrix(R.transpose(0, 2, 1)).as_euler('ZYX', degrees=True)
  pred = np.c_[e[:, 1], e[:, 2], e[:, 0]]  # yaw, pitch, roll
  wrap = lambda d: np.abs((d + 180) % 360 - 180)
  yaws = np.load(AFLW / 'test.configs' / 'AFLW2000-3D.pose.npy')
  assert abs(pose['yaw_mae_all'] - wrap(pred[:, 0] - yaws).mean()) < 0.05
  names = (AFLW / 'AFLW2000-3D_crop.list').read_text().split()
  rows, gt = [], []
  for f in sorted(mats.glob('*.mat')):
    pp = np.rad2deg(scipy.io.loadmat(str(f))['Pose_Para'].reshape(-1)[:3])
    rows.append(names.index(f.stem + '.jpg'))
    gt.append([pp[1], pp[0], pp[2]])
  want = wrap(pred[rows] - np.array(gt)).mean(0)
  got = [pose['originals'][k] for k in ('yaw', 'pitch', 'roll')]
  np.testing.assert_allclose(got, want, atol=0.2)


def test_evaluate_bad_input(tmp_path):
  write_aflw(tmp_path / 'a')
  cases = [
      (np.zeros((3, 5)), [], 'expected (N, 62) parameters'),
      (np.zeros((4, 2, 68)), [], '4 rows but the AFLW2000-3D list has 3'),
      (np.zeros((3, 62)), [], 'need --param_stats'),
      # A NaN row: refused, naming the row (was: a table of nan, exit 0).
      (np.r_[np.full((1, 2, 68), 60.0), np.full((1, 2, 68), np.nan), np.full((1, 2, 68), 60.0)],
       [], 'rows [1]'),
      # Image-pixel landmarks read as crop pixels land far from every face.
      (np.full((3, 2, 68), 200.0), [], 'implausible landmarks (if they are image pixels'),
      (np.full((2, 2, 68), 60.0), ['--names', tmp_path / 'names.txt'], 'are not in'),
  ]
  (tmp_path / 'names.txt').write_text('nope.jpg\nface0.jpg\n')
  for arr, extra, msg in cases:
    np.save(tmp_path / 'p.npy', arr.astype(np.float32))
    r = _evaluate('--predictions', tmp_path / 'p.npy', '--aflw2000_dir', tmp_path / 'a', *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and msg in lines[0], r.stderr


def test_evaluate_four_channel_model_needs_detections(tmp_path):
  from dasl_jax.io import checkpoint
  from dasl_jax.models import ModelConfig
  write_aflw(tmp_path / 'a')  # image 1 has no detector landmarks
  cfg = ModelConfig(arch='mobilenet', width=0.25, in_channels=4, convention='v1')
  rng = np.random.default_rng(0)

  def leaf(path, s):  # He-scaled kernels, unit BN: activations stay alive
    name = getattr(path[-1], 'key', '')
    if name in ('var', 'scale'):
      return np.ones(s.shape, np.float32)
    if name in ('mean', 'bias'):
      return np.zeros(s.shape, np.float32)
    return (rng.normal(size=s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(leaf, checkpoint.expected_shapes(cfg, 32))
  checkpoint.save_model(tmp_path / 'm', cfg, variables,
                        P.ParamStats(np.zeros(62, np.float32), np.ones(62, np.float32)))
  r = _evaluate('--checkpoint', tmp_path / 'm', '--aflw2000_dir', tmp_path / 'a',
                '--subset', 2000)
  assert r.returncode == 2
  assert 'error: --subset 2000: this is a 4-channel model' in r.stderr
  assert '[1]' in r.stderr and 'use --subset 1998' in r.stderr

  # With detections for every image the 4-channel path runs end to end; the
  # FLM channel reaches the network (a model with zero FLM weights would not care).
  from dasl_jax.inference import core as predict_batch
  from tests.helpers.dataset_files import toy_model
  ds = aflw2000.load(tmp_path / 'a')
  module = checkpoint.create_regressor(cfg)
  fn = predict_batch.make_forward(module, 4, 'v1')
  unit = P.ParamStats(np.zeros(62, np.float32), np.ones(62, np.float32))
  pts = predict_batch.flm_points(np.nan_to_num(ds.detector68))
  a = predict_batch.predict_crops(fn, variables, unit, toy_model(), ds.load_crops, 3, pts,
                                  batch_size=2)
  b = predict_batch.predict_crops(fn, variables, unit, toy_model(), ds.load_crops, 3, pts + 7,
                                  batch_size=2)
  assert a['lms68'].shape == (3, 68, 2) and a['whitened'].shape == (3, 62)
  assert np.abs(a['whitened'] - b['whitened']).max() > 1e-4


@requires_assets('bfm', 'keypoints68')
def test_evaluate_bootstrap_flm_matches_direct_forward(tmp_path):
  """--flm bootstrap (inference.Predictor) against predict_batch with the mean face's
  18 points drawn by hand: one pass must give the same landmarks."""
  from dasl_jax.io import checkpoint
  from dasl_jax.inference import core as predict_batch
  from dasl_jax.geometry import landmarks as L
  from dasl_jax.face_model import morphable_model as mm
  from dasl_jax.models import ModelConfig
  write_aflw(tmp_path / 'a')
  cfg = ModelConfig(arch='mobilenet', width=0.25, in_channels=4, convention='v1')
  rng = np.random.default_rng(1)
  variables = jax.tree_util.tree_map(
      lambda s: (rng.normal(size=s.shape) * 0.1).astype(np.float32)
      if s.ndim else np.float32(1), checkpoint.expected_shapes(cfg, 32))
  variables['batch_stats'] = jax.tree_util.tree_map(np.abs, variables['batch_stats'])
  stats = P.load_param_stats(V2_STATS) if V2_STATS.exists() else P.ParamStats(
      rng.normal(size=62).astype(np.float32), np.ones(62, np.float32))
  checkpoint.save_model(tmp_path / 'm', cfg, variables, stats)
  bfm = asset_path('bfm')
  r = _evaluate('--checkpoint', tmp_path / 'm', '--aflw2000_dir', tmp_path / 'a', '--subset',
                2000, '--flm', 'bootstrap', '--bootstrap_iters', 1, '--bfm', bfm,
                '--predictions_out', tmp_path / 'lms.npy', '--json', tmp_path / 'r.json')
  assert r.returncode == 0, r.stderr
  res = json.loads((tmp_path / 'r.json').read_text())
  assert res['flm'] == 'bootstrap x1' and res['original']['n'] == 3
  model = mm.load(bfm)
  mean_lms = np.asarray(mm.landmarks2d(model.landmark_model(), stats.mean, 'v1'))
  pts = np.repeat(L.select18_np(mean_lms)[None], 3, 0)
  ds = aflw2000.load(tmp_path / 'a')
  restored = checkpoint.restore(tmp_path / 'm')
  fn = predict_batch.make_forward(restored.module, 4, 'v1')
  want = predict_batch.predict_crops(fn, restored.variables, stats, model.landmark_model(),
                                     ds.load_crops, 3, pts, batch_size=4)['lms68']
  got = np.swapaxes(np.load(tmp_path / 'lms.npy'), 1, 2)
  np.testing.assert_allclose(got, want, atol=1e-3)


def write_aflw21(root: Path, n=5):
  rng = np.random.default_rng(3)
  names = [f'face{i}.jpg' for i in range(n)]
  (root / 'images').mkdir(parents=True)
  for name in names:  # stored at 100x100: the loader resizes to 120
    cv2.imwrite(str(root / 'images' / name), rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
  (root / 'list.txt').write_text('\n'.join(names) + '\n')
  roi = np.c_[rng.uniform(0, 50, (n, 2)), np.zeros((n, 2))]
  roi[:, 2:] = roi[:, :2] + rng.uniform(80, 200, (n, 1))
  pts = rng.uniform(0, 1, (n, 2, 21)) * (roi[:, 2:] - roi[:, :2])[:, :, None] + \
      roi[:, :2, None]
  pts[1, 0, [3, 9, 16]] = -1  # invisible points
  np.save(root / 'pts21.npy', pts.astype(np.float32))
  np.save(root / 'roi_box.npy', roi.astype(np.int64))
  np.save(root / 'yaws.npy', np.float32([-75, -40, 0, 20, 85][:n]))
  return pts.astype(np.float32), roi.astype(np.int64)


def test_evaluate_aflw21_against_numpy(tmp_path):
  pts, roi = write_aflw21(tmp_path / 'w')
  pred = np.random.default_rng(4).uniform(10, 110, (5, 2, 68)).astype(np.float32)
  np.save(tmp_path / 'p.npy', pred)
  r = _evaluate('--predictions', tmp_path / 'p.npy', '--aflw_dir', tmp_path / 'w',
                '--json', tmp_path / 'r.json')
  assert r.returncode == 0, r.stderr
  assert 'aflw21' in r.stdout and '21-point' in r.stdout
  res = json.loads((tmp_path / 'r.json').read_text())['aflw21']
  # Independently, with the assets README's 1-based iBUG-68 -> AFLW-21 table.
  one_based = [18, 20, 22, 23, 25, 27, 37, None, 40, 43, None, 46, 3, 32, 31, 36, 15, 49,
               None, 55, 9]
  means = {7: range(37, 43), 10: range(43, 49), 18: range(61, 69)}
  errs = []
  for i in range(5):
    crop = pred[i].T.astype(np.float64)  # (68, 2)
    s = (roi[i, 2:] - roi[i, :2]) / 120.0
    img = crop * s + roi[i, :2]
    p21 = np.array([img[j - 1] if j else img[[k - 1 for k in means[c]]].mean(0)
                    for c, j in enumerate(one_based)])
    gt = pts[i].T.astype(np.float64)
    vis = gt[:, 0] != -1
    wh = gt[vis].max(0) - gt[vis].min(0)
    errs.append(np.linalg.norm(p21[vis] - gt[vis], axis=1).mean() / np.sqrt(wh[0] * wh[1]))
  errs = np.array(errs) * 100
  assert res['n'] == 5
  np.testing.assert_allclose(res['mean'], errs.mean(), rtol=1e-5)
  bins = [errs[[2, 3]].mean(), errs[[1]].mean(), errs[[0, 4]].mean()]
  np.testing.assert_allclose(res['bins'], bins, rtol=1e-5)


def test_evaluate_aflw21_bad_input(tmp_path):
  write_aflw21(tmp_path / 'w')
  np.save(tmp_path / 'p.npy', np.zeros((4, 2, 68), np.float32))
  r = _evaluate('--predictions', tmp_path / 'p.npy', '--aflw_dir', tmp_path / 'w')
  assert r.returncode == 2 and 'needs (5, 2, 68) crop landmarks' in r.stderr, r.stderr
  np.save(tmp_path / 'w' / 'yaws.npy', np.zeros(3, np.float32))
  np.save(tmp_path / 'p.npy', np.zeros((5, 2, 68), np.float32))
  r = _evaluate('--predictions', tmp_path / 'p.npy', '--aflw_dir', tmp_path / 'w')
  assert r.returncode == 2 and 'yaws.npy: has 3 rows but list.txt lists 5' in r.stderr, r.stderr
  r = _evaluate('--predictions', tmp_path / 'p.npy', '--aflw_dir', tmp_path / 'nothing')
  assert r.returncode == 2 and 'no list.txt' in r.stderr, r.stderr
