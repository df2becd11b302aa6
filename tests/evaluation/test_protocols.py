"""Protocol variants of the evaluation library against numpy re-derivations.

* the yaw file (``AFLW2000-3D.pose.npy`` or ``AFLW2000-3D-new.pose.npy``);
* 2DASL's 3D 68-point NME (z shifted to a minimum of 0, 2D box normaliser);
* any named subset with image-pixel landmarks, (N, 2, 68) or (N, 3, 68);
* raw (de-whitened) parameters as 3DDFA_V2 saves them, and the refusal of raw
  parameters declared whitened.

The real-file tests use 3DDFA_V2's own predictions (``mb05_reference_*``, made
by the original PyTorch code) and check the published 3.792 mean of bins.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dasl_jax.evaluation import aflw2000
from dasl_jax.evaluation import protocols
from tests.helpers.asset_marks import asset_path, requires_assets

REPO = Path(__file__).resolve().parents[2]

AFLW = asset_path('aflw2000-3d')
REF_LMS = asset_path('pretrained', 'mb05_reference_lms68_crop.npy')
REF_PARAMS = asset_path('pretrained', 'mb05_reference_params62.npy')
V2_STATS = asset_path('pretrained', 'param_mean_std_62d_120x120.pkl')
needs_real = [requires_assets('aflw2000-3d', 'test.configs', 'AFLW2000-3D-new.pose.npy'),
              requires_assets('pretrained', 'mb05_reference_params62.npy'),
              requires_assets('bfm', 'keypoints68', 'u_base.txt')]


def _evaluate(*args):
  r = subprocess.run([sys.executable, '-m', 'experiments.evaluate', *map(str, args)], cwd=REPO,
                     capture_output=True, text=True, timeout=600)
  return r


def _np_bins(err, yaws):
  """Per-bin means by hand: [0, 30], (30, 60], (60, inf) of |yaw|."""
  a = np.abs(yaws)
  masks = [a <= 30, (a > 30) & (a <= 60), a > 60]
  return [float(err[m].mean()) for m in masks], [int(m.sum()) for m in masks]


def _np_nme2d(pred, gt):
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  out = []
  for p, g in zip(pred, gt):  # one image at a time, as the MATLAB scripts do
    w, h = g[:, 0].max() - g[:, 0].min(), g[:, 1].max() - g[:, 1].min()
    out.append(np.mean(np.sqrt(((p - g) ** 2).sum(1))) / np.sqrt(w * h))
  return np.array(out) * 100


def _np_nme3d(pred, gt):
  pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
  out = []
  for p, g in zip(pred, gt):
    p, g = p.copy(), g.copy()
    p[:, 2] -= p[:, 2].min()
    g[:, 2] -= g[:, 2].min()
    w, h = g[:, 0].max() - g[:, 0].min(), g[:, 1].max() - g[:, 1].min()
    out.append(np.mean(np.sqrt(((p - g) ** 2).sum(1))) / np.sqrt(w * h))
  return np.array(out) * 100


def test_nme_3d_matches_numpy_loop():
  rng = np.random.default_rng(0)
  gt = rng.uniform(0, 200, (5, 68, 3))
  pred = gt + rng.normal(0, 3, gt.shape) + np.array([0, 0, 40.0])  # a z offset is free
  got = protocols.nme_3d(pred, gt) * 100
  np.testing.assert_allclose(got, _np_nme3d(pred, gt), rtol=1e-12)
  # The z shift makes a constant depth offset cost nothing.
  np.testing.assert_allclose(protocols.nme_3d(gt + [0, 0, 17.0], gt), 0, atol=1e-12)


def _ds_with(n=6, seed=0):
  rng = np.random.default_rng(seed)
  pts3 = rng.uniform(50, 250, (n, 68, 3)).astype(np.float32)
  return aflw2000.AFLW2000(
      root=None, names=[f'image{i:05d}.jpg' for i in range(n)],
      roi_boxes=np.tile(np.float32([20, 20, 280, 280]), (n, 1)), pts68=pts3[..., :2],
      reannotated=None, yaws=np.float32([5, 40, 80, -70, -20, 50][:n]), detector68=None,
      has_detection=np.zeros(n, bool), pts68_3d=pts3,
      new_yaws=np.float32([35, 40, 20, -70, -65, 10][:n])), rng


def test_score_yaw_files_and_3d_against_numpy():
  ds, rng = _ds_with()
  pred3 = ds.pts68_3d + rng.normal(0, 4, ds.pts68_3d.shape).astype(np.float32)
  pred = protocols.Predictions(lms68=pred3[..., :2], lms3d=pred3)
  idx = np.arange(len(ds))
  for yaw_file, yaws in (('default', ds.yaws), ('new', ds.new_yaws)):
    res = protocols.score_aflw2000(ds, idx, pred, '2d', yaw_file)
    bins, counts = _np_bins(_np_nme2d(pred3[..., :2], ds.pts68), yaws)
    np.testing.assert_allclose(res['original']['bins'], bins, rtol=1e-10)
    assert res['protocol']['per_bin'] == counts
    assert res['protocol']['yaw_file'].endswith(
        'AFLW2000-3D.pose.npy' if yaw_file == 'default' else 'AFLW2000-3D-new.pose.npy')
  res = protocols.score_aflw2000(ds, idx, pred, '3d')
  bins, _ = _np_bins(_np_nme3d(pred3, ds.pts68_3d), ds.yaws)
  np.testing.assert_allclose(res['original']['bins'], bins, rtol=1e-10)
  line = protocols.protocol_line(res)
  assert 'AFLW2000-3D, 6 images, 3D' in line and 'sqrt(w*h)' in line and '(bins 2/2/2)' in line


def test_landmarks_from_predictions_frames_and_refusals():
  ds, rng = _ds_with()
  roi = ds.roi_boxes
  img = ds.pts68 + rng.normal(0, 2, ds.pts68.shape)
  crop = (img - 20) * 120 / 260  # the ROI box maps 260 image px to 120 crop px
  a = protocols.landmarks_from_predictions(np.swapaxes(crop, 1, 2), roi, 'crop')
  b = protocols.landmarks_from_predictions(np.swapaxes(img, 1, 2), roi, 'image')
  np.testing.assert_allclose(a.lms68, img, atol=1e-3)
  np.testing.assert_allclose(b.lms68, img, atol=1e-4)
  bad = np.swapaxes(img, 1, 2).copy()
  bad[3, 0, 5] = np.nan
  with pytest.raises(protocols.DaslError, match=r'1 of 6 rows are not finite.*rows \[3\]'):
    protocols.landmarks_from_predictions(bad, roi, 'image')
  with pytest.raises(protocols.DaslError, match='implausible landmarks'):
    protocols.landmarks_from_predictions(np.swapaxes(img, 1, 2) + 400, roi, 'image')
  with pytest.raises(protocols.DaslError, match='pass --landmark_frame image'):
    protocols.landmarks_from_predictions(np.zeros((6, 3, 68)), roi, 'crop')


def _real(f):
  for m in needs_real:
    f = m(f)
  return f


@_real
def test_named_subset_image_landmarks_command(tmp_path):
  ds = aflw2000.load(AFLW)
  rng = np.random.default_rng(1)
  idx = np.sort(rng.choice(len(ds), 37, replace=False))
  lms_crop = np.swapaxes(np.load(REF_LMS), 1, 2)[idx]
  roi = ds.roi_boxes[idx]
  s = (roi[:, 2:] - roi[:, :2]) / 120
  img = lms_crop * s[:, None] + roi[:, None, :2]
  np.save(tmp_path / 'p.npy', np.swapaxes(img, 1, 2).astype(np.float32))
  (tmp_path / 'names.txt').write_text('\n'.join(ds.names[i] for i in idx) + '\n')
  r = _evaluate('--predictions', tmp_path / 'p.npy', '--names', tmp_path / 'names.txt',
                '--aflw2000_dir', AFLW, '--yaw_file', 'new', '--json', tmp_path / 'r.json')
  assert r.returncode == 0, r.stderr
  res = json.loads((tmp_path / 'r.json').read_text())
  yaws = np.load(AFLW / 'test.configs' / 'AFLW2000-3D-new.pose.npy')[idx]
  gt = np.swapaxes(np.load(AFLW / 'test.configs' / 'AFLW2000-3D.pts68.npy'), 1, 2)[idx, :, :2]
  bins, counts = _np_bins(_np_nme2d(img, gt), yaws)
  np.testing.assert_allclose(res['original']['bins'], bins, rtol=1e-5)
  assert res['protocol']['per_bin'] == counts and res['original']['n'] == 37
  assert r.stdout.startswith('protocol: AFLW2000-3D, 37 images')


@_real
def test_raw_params_published_figure_and_3d(tmp_path):
  """3DDFA_V2's own saved (de-whitened) parameters: refused when declared whitened
  (was an NME of 271,596 %), the published 3.792 with --param_kind raw, and the
  3D NME equal to a numpy re-derivation from the BFM keypoint basis."""
  base = ('--predictions', REF_PARAMS, '--param_stats', V2_STATS, '--convention', 'v2',
          '--aflw2000_dir', AFLW)
  r = _evaluate(*base)
  assert r.returncode == 2 and 'look like de-whitened parameters' in r.stderr, r.stderr
  assert len(r.stderr.strip().splitlines()) == 1
  r = _evaluate(*base, '--param_kind', 'raw', '--json', tmp_path / 'r.json')
  assert r.returncode == 0, r.stderr
  res = json.loads((tmp_path / 'r.json').read_text())
  assert abs(res['original']['mean_of_bins'] - 3.792) < 5e-4
  r = _evaluate(*base, '--param_kind', 'raw', '--nme', '3d', '--json', tmp_path / 'r3.json')
  assert r.returncode == 0, r.stderr
  res3 = json.loads((tmp_path / 'r3.json').read_text())
  # numpy: 68 keypoints of the BFM (u + W_shp a_shp + W_exp a_exp), f R X + t,
  # 3DDFA_V2's pixel frame (x - 1, 120 - y), then into the image through the ROI
  # box with z scaled by the mean of the two axis scales.
  kp = asset_path('bfm', 'keypoints68')
  u = np.loadtxt(kp / 'u_base.txt').reshape(-1)
  w_shp = np.loadtxt(kp / 'w_shp_base.txt').reshape(len(u), -1)
  w_exp = np.loadtxt(kp / 'w_exp_base.txt').reshape(len(u), -1)
  p = np.load(REF_PARAMS).astype(np.float64)
  X = (u[None] + p[:, 12:52] @ w_shp.T + p[:, 52:62] @ w_exp.T).reshape(-1, 68, 3)
  P3 = p[:, :12].reshape(-1, 3, 4)
  V = np.einsum('nij,nkj->nki', P3[:, :, :3], X) + P3[:, None, :, 3]
  ds = aflw2000.load(AFLW)
  roi = ds.roi_boxes.astype(np.float64)
  sx, sy = (roi[:, 2] - roi[:, 0]) / 120, (roi[:, 3] - roi[:, 1]) / 120
  img = np.stack([(V[..., 0] - 1) * sx[:, None] + roi[:, None, 0],
                  (120 - V[..., 1]) * sy[:, None] + roi[:, None, 1],
                  V[..., 2] * ((sx + sy) / 2)[:, None]], -1)
  want, _ = _np_bins(_np_nme3d(img, ds.pts68_3d.astype(np.float64)), ds.yaws)
  np.testing.assert_allclose(res3['original']['bins'], want, rtol=1e-4)
  # Depth adds error on top of the 2D one, but the same order: a wrong z sign would
  # put the 3D NME several times higher.
  assert res['original']['mean_of_bins'] < res3['original']['mean_of_bins'] < \
      2 * res['original']['mean_of_bins']
