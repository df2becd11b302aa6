"""The synthetic dataset: format, determinism, label consistency, crops, stats, BFM variant."""
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.geometry import camera
from dasl_jax.geometry import landmarks as LM
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.geometry import params as P
from dasl_jax.data import synthetic as S
from dasl_jax.face_model import synthetic as sm
from tests.helpers.asset_marks import asset_path, requires_assets


@pytest.fixture(scope='module')
def model():
  return sm.build_synthetic_model(0)


@pytest.fixture(scope='module')
def stats(model):
  return S.sampling_param_stats(model, n=2000)


@pytest.fixture(scope='module')
def sources(model, stats):
  return {k: S.SyntheticFaces(model, k, 64, 7, stats) for k in S.KINDS}


def test_batch_format(sources):
  for kind, src in sources.items():
    ex = src[3]
    keys = {'image', 'points18', 'mask18', 'lms68'} | ({'params'} if kind != 'wild' else set())
    assert set(ex) == keys, kind
    assert ex['image'].dtype == np.uint8 and ex['image'].shape == (120, 120, 3)
    assert ex['points18'].dtype == np.float32 and ex['points18'].shape == (18, 2)
    assert ex['mask18'].dtype == np.float32 and np.all(ex['mask18'] == 1)
    assert ex['lms68'].dtype == np.float32 and ex['lms68'].shape == (68, 2)
    if kind != 'wild':
      assert ex['params'].dtype == np.float32 and ex['params'].shape == (62,)
  assert len(sources['3d']) == 64
  with pytest.raises(IndexError):
    sources['3d'][64]


def test_deterministic_random_access(model, stats, sources):
  again = S.SyntheticFaces(model, '3d', 64, 7, stats)
  for i in (5, 0, 63):   # any order: example i depends only on (seed, kind, i)
    a, b = sources['3d'][i], again[i]
    for k in a:
      assert a[k].tobytes() == b[k].tobytes(), (i, k)
  assert sources['3d'][1]['image'].tobytes() != sources['3d'][2]['image'].tobytes()
  other_seed = S.SyntheticFaces(model, '3d', 64, 8, stats)
  assert other_seed[1]['params'].tobytes() != sources['3d'][1]['params'].tobytes()
  assert sources['heldout'][1]['params'].tobytes() != sources['3d'][1]['params'].tobytes()


def numpy_landmarks(model, p, size=120):
  """Independent numpy re-derivation: u + W a, fR x + t, v1 pixels (x, size + 1 - y)."""
  kp = np.asarray(model.keypoints)
  rows = (3 * kp[:, None] + np.arange(3)).ravel()
  u = np.asarray(model.u, np.float64)[rows]
  ws = np.asarray(model.w_shp, np.float64)[rows]
  we = np.asarray(model.w_exp, np.float64)[rows]
  shape = (u + ws @ p[12:52] + we @ p[52:62]).reshape(68, 3)
  pose = p[:12].reshape(3, 4)
  cam = shape @ pose[:, :3].T + pose[:, 3]
  return np.stack([cam[:, 0], size + 1 - cam[:, 1]], 1)


def test_labels_reproject(model, stats, sources):
  lm = model.landmark_model()
  for kind in ('3d', 'heldout'):
    for i in range(4):
      ex = sources[kind][i]
      p = stats.dewhiten(ex['params'].astype(np.float64))
      via_core = np.asarray(mm.landmarks2d(lm, jnp.asarray(p, jnp.float32), 'v1'))
      np.testing.assert_allclose(ex['lms68'], via_core, atol=0.02)
      np.testing.assert_allclose(ex['lms68'], numpy_landmarks(model, p), atol=0.02)
      # The detector-like points are the 18 selected ones plus a few pixels of noise.
      err = np.linalg.norm(ex['points18'] - LM.select18_np(ex['lms68']), axis=1)
      assert np.median(err) < 6 and err.max() < 40


def test_crops_like_3ddfa(sources):
  boxes, centres, yaws = [], [], []
  for i in range(40):
    ex = sources['3d'][i]
    l = ex['lms68']
    boxes.append((l.max(0) - l.min(0)).max())
    centres.append((l.max(0) + l.min(0)) / 2)
  boxes, centres = np.array(boxes), np.array(centres)
  assert 78 < np.median(boxes) < 90 and boxes.min() > 65 and boxes.max() < 100
  assert np.all(np.abs(centres - 60.5) < 12)


def test_rendered_face_is_where_the_labels_are(model, stats):
  # On a plain black background with no blur/noise, the face covers its landmarks.
  src = S.SyntheticFaces(model, '3d', 4, 0, stats)
  p = src.sample_params(np.random.default_rng(1))
  v = src._project(p, src.u, src.basis_t, 'v2')
  from dasl_jax.viz import render
  img, depth = render.render(v, src.triangles, src.colors, 120, 120)
  lms = np.asarray(mm.landmarks2d(model.landmark_model(), jnp.asarray(p, jnp.float32), 'v1'))
  inner = np.round(lms[27:68]).astype(int)   # nose, eyes, mouth: never on the outline
  inner = inner[(inner >= 0).all(1) & (inner < 120).all(1)]
  assert np.isfinite(depth[inner[:, 1], inner[:, 0]]).mean() > 0.9


def test_images_are_in_0_based_pixels_and_labels_follow_the_convention(model, stats):
  # The same face is drawn whatever the label convention; v1 labels are the
  # 1-based twins of v2's (x + 1, y + 1), as in 3DDFA v1 against 3DDFA_V2.
  v1 = S.SyntheticFaces(model, '3d', 4, 5, stats, convention='v1')[2]
  v2 = S.SyntheticFaces(model, '3d', 4, 5, stats, convention='v2')[2]
  assert v1['image'].tobytes() == v2['image'].tobytes()
  np.testing.assert_allclose(v1['lms68'] - v2['lms68'], 1.0, atol=1e-4)
  np.testing.assert_allclose(v1['params'], v2['params'], atol=1e-5)


def test_rotation_matches_camera_pose_angles():
  for yaw, pitch, roll in ((30, -10, 5), (-75, 20, -15), (0, 0, 0)):
    R = S.rotation(yaw, pitch, roll)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    ang = np.asarray(camera.pose_angles(jnp.asarray(3e-4 * R, jnp.float32)))
    np.testing.assert_allclose(ang, [yaw, pitch, roll], atol=1e-3)


def test_pose_distribution_and_whitening(model, stats, sources):
  assert stats.mean.shape == (62,) and np.all(stats.std > 0)
  again = S.sampling_param_stats(model, n=2000)
  assert again.mean.tobytes() == stats.mean.tobytes()
  src = S.SyntheticFaces(model, '3d', 600, 11, stats)
  ps = np.stack([src.sample_params(src._rng(i)) for i in range(600)])
  yaw = np.asarray(camera.pose_angles(jnp.asarray(ps[:, :12].reshape(-1, 3, 4)[:, :, :3])))[:, 0]
  a = np.abs(yaw)
  assert a.max() > 70 and (a < 30).mean() > 0.4 and (a > 60).mean() > 0.05
  w = stats.whiten(ps)
  assert np.all(np.abs(w.mean(0)[P.SHAPE]) < 0.25) and np.all(np.abs(w.std(0)[P.SHAPE] - 1) < 0.2)


def test_wild_has_a_domain_shift(sources):
  def face_chroma_spread(kind):
    """Spread across images of the face's chromaticity (a patch on the cheeks' midline)."""
    chroma = []
    for i in range(32):
      ex = sources[kind][i]
      c = np.round(ex['lms68'][[28, 29, 1, 15]].mean(0)).astype(int)
      patch = ex['image'][c[1] - 2:c[1] + 3, c[0] - 2:c[0] + 3].reshape(-1, 3).astype(float).mean(0)
      chroma.append(patch / patch.sum())
    return np.std(chroma, axis=0).sum()
  # Wild faces: tinted light and wider skin tones.
  assert face_chroma_spread('wild') > 1.5 * face_chroma_spread('3d')


def test_materialize_npz_cache(model, stats, tmp_path):
  src = S.SyntheticFaces(model, 'wild', 5, 3, stats)
  fresh = [src[i] for i in range(5)]
  path = tmp_path / 'wild.npz'
  src.materialize(path, progress=False)
  loaded = S.SyntheticFaces(model, 'wild', 5, 3, stats).materialize(path, progress=False)
  for i in range(5):
    for k in fresh[i]:
      assert loaded[i][k].tobytes() == fresh[i][k].tobytes()


def test_grain_source(sources):
  grain = pytest.importorskip('grain')
  ds = grain.MapDataset.source(sources['3d']).map(lambda ex: ex['params'])
  assert ds[2].tobytes() == sources['3d'][2]['params'].tobytes()


@requires_assets('bfm', 'Model_PAF.pkl')
@requires_assets('bfm', 'Model_Shape_Sim.mat')
def test_real_bfm_variant():
  bfm = asset_path('bfm')
  parts = S.synthetic_bundle_parts('bfm', (3, 3, 3), seed=0, bfm_dir=bfm)
  model, label = parts['model'], parts['label_model']
  assert model.n_vertices == 4096 and model.colors.shape == (4096, 3)
  assert parts['param_stats'].source.endswith('param_whitening.pkl')
  ex = parts['3d'][1]
  p = parts['param_stats'].dewhiten(ex['params'].astype(np.float64))
  lms = np.asarray(mm.landmarks2d(label, jnp.asarray(p, jnp.float32), 'v1'))
  np.testing.assert_allclose(ex['lms68'], lms, atol=0.05)
  # The render grid's landmark vertices sit on the label landmarks (within ~3 px).
  grid = np.asarray(mm.landmarks2d(model, jnp.asarray(p, jnp.float32), 'v1'))
  assert np.median(np.linalg.norm(grid - lms, axis=1)) < 3
  assert ex['image'].std() > 10


@requires_assets('bfm', 'Model_PAF.pkl')
@requires_assets('bfm', 'Model_Shape_Sim.mat')
@requires_assets('pretrained', 'param_mean_std_62d_120x120.pkl')
def test_real_bfm_labels_in_another_whitening(tmp_path):
  """label_stats (a fine-tuned checkpoint's whitening) changes only how the same
  faces' labels are whitened, and the cache file name follows it."""
  bfm = asset_path('bfm')
  v2 = P.load_param_stats(asset_path('pretrained', 'param_mean_std_62d_120x120.pkl'))
  a = S.synthetic_bundle_parts('bfm', (2, 1, 1), seed=0, bfm_dir=bfm, convention='v2')
  b = S.synthetic_bundle_parts('bfm', (2, 1, 1), seed=0, bfm_dir=bfm, convention='v2',
                               label_stats=v2)
  assert b['param_stats'] is v2 and a['param_stats'].source.endswith('param_whitening.pkl')
  v1 = a['param_stats']
  for i in range(2):
    ea, eb = a['3d'][i], b['3d'][i]
    assert ea['image'].tobytes() == eb['image'].tobytes()
    # Same de-whitened parameters: pa * std1 + mean1 == pb * std2 + mean2.
    pa = ea['params'].astype(np.float64) * np.asarray(v1.std) + np.asarray(v1.mean)
    pb = eb['params'].astype(np.float64) * np.asarray(v2.std) + np.asarray(v2.mean)
    np.testing.assert_allclose(pb, pa, rtol=1e-4, atol=1e-4 * np.abs(pa).max())
  assert a['3d'].cache_name() != b['3d'].cache_name()
  assert a['3d'].cache_name() == S.synthetic_bundle_parts(
      'bfm', (2, 1, 1), seed=0, bfm_dir=bfm, convention='v2')['3d'].cache_name()
