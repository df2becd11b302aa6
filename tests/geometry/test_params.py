"""62-parameter layout and whitening, checked against numpy re-derivations.

References are written here from METHOD.md section 1 (p[0:12] row-major 3x4
[fR | t], p[12:52] shape, p[52:62] expression) and the assets README (the two
statistics pickles and the keypoints68 text folder), not from dasl_jax.geometry.params.
"""
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError
from tests.helpers.asset_marks import asset_path, requires_assets


def _np_split(p):
  """numpy reference: (B, 62) -> fR (B,3,3), t (B,3), shp (B,40), exp (B,10)."""
  b = p.shape[0]
  pose = np.stack([p[i, :12].reshape(3, 4) for i in range(b)])  # row-major
  return pose[:, :, :3], pose[:, :, 3], p[:, 12:52], p[:, 52:62]


def test_layout_constants():
  assert (P.N_PARAMS, P.N_POSE, P.N_SHAPE, P.N_EXP) == (62, 12, 40, 10)
  idx = np.arange(62)
  assert list(idx[P.POSE]) == list(range(0, 12))
  assert list(idx[P.SHAPE]) == list(range(12, 52))
  assert list(idx[P.EXP]) == list(range(52, 62))
  # Row-major 3x4: the z translation is row 2, column 3 -> 2 * 4 + 3.
  assert P.TZ_INDEX == 2 * 4 + 3


def test_split_matches_numpy_and_round_trips(rng):
  p = rng.normal(size=(5, 62)).astype(np.float32)
  fR, t, a_shp, a_exp = P.split(p)
  ref = _np_split(p)
  for got, want in zip((fR, t, a_shp, a_exp), ref):
    np.testing.assert_array_equal(np.asarray(got), want)
  # Spot check one entry by hand: p[4] is row 1, column 0 of fR; p[7] is t_y.
  assert fR[2, 1, 0] == p[2, 4] and t[3, 1] == p[3, 7]
  np.testing.assert_array_equal(np.asarray(P.join(*ref)), p)
  np.testing.assert_array_equal(np.asarray(P.join(fR, t, a_shp, a_exp)), p)


def test_split_join_leading_dims_and_single_vector(rng):
  p = rng.normal(size=(2, 3, 62)).astype(np.float32)
  parts = P.split(p)
  assert [x.shape for x in parts] == [(2, 3, 3, 3), (2, 3, 3), (2, 3, 40), (2, 3, 10)]
  np.testing.assert_array_equal(np.asarray(P.join(*parts)), p)
  one = P.split(p[0, 0])
  assert one[0].shape == (3, 3)
  np.testing.assert_array_equal(np.asarray(P.join(*one)), p[0, 0])


def test_split_join_jit_vmap_grad(rng):
  p = jnp.asarray(rng.normal(size=(4, 62)).astype(np.float32))
  rt = jax.jit(lambda q: P.join(*P.split(q)))
  np.testing.assert_array_equal(np.asarray(rt(p)), np.asarray(p))
  np.testing.assert_array_equal(np.asarray(jax.vmap(rt)(p)), np.asarray(p))
  # d/dp sum(t) is 1 exactly at the three translation entries 3, 7, 11.
  g = jax.grad(lambda q: P.split(q)[1].sum())(p[0])
  want = np.zeros(62, np.float32)
  want[[3, 7, 11]] = 1
  np.testing.assert_array_equal(np.asarray(g), want)


# ---------------------------------------------------------------------------
# Whitening statistics: the three formats users have.

STATS_FILES = [
    pytest.param(('bfm', 'param_whitening.pkl'), ('param_mean', 'param_std'),
                 marks=requires_assets('bfm', 'param_whitening.pkl'), id='3ddfa_pkl'),
    pytest.param(('pretrained', 'param_mean_std_62d_120x120.pkl'), ('mean', 'std'),
                 marks=requires_assets('pretrained', 'param_mean_std_62d_120x120.pkl'),
                 id='3ddfa_v2_pkl'),
]


@pytest.mark.parametrize('parts,keys', STATS_FILES)
def test_real_pickle_stats_whiten_dewhiten(parts, keys, rng):
  path = asset_path(*parts)
  with open(path, 'rb') as f:
    raw = pickle.load(f, encoding='latin1')
  mean = np.asarray(raw[keys[0]], np.float64)
  std = np.asarray(raw[keys[1]], np.float64)
  stats = P.load_param_stats(path)
  assert str(path) in stats.source
  np.testing.assert_array_equal(stats.mean, raw[keys[0]])
  np.testing.assert_array_equal(stats.std, raw[keys[1]])
  # Parameters drawn around the statistics, whitened by hand in float64.
  p = (mean + std * rng.normal(size=(3, 62))).astype(np.float32)
  want = (p.astype(np.float64) - mean) / std
  got = np.asarray(P.whiten(p, stats))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(stats.whiten(p)), got)
  back = np.asarray(P.dewhiten(jnp.asarray(want, jnp.float32), stats))
  np.testing.assert_allclose(back, p, rtol=1e-5, atol=1e-5 * np.abs(mean).max())


@requires_assets('bfm', 'keypoints68', 'param_mean.txt')
@requires_assets('bfm', 'param_whitening.pkl')
@requires_assets('pretrained', 'param_mean_std_62d_120x120.pkl')
def test_text_folder_equals_3ddfa_pickle_and_differs_from_v2():
  folder = asset_path('bfm', 'keypoints68')
  txt = P.load_param_stats(folder)
  np.testing.assert_array_equal(
      txt.mean, np.loadtxt(folder / 'param_mean.txt').astype(np.float32))
  np.testing.assert_array_equal(
      txt.std, np.loadtxt(folder / 'param_std.txt').astype(np.float32))
  v1 = P.load_param_stats(asset_path('bfm', 'param_whitening.pkl'))
  v2 = P.load_param_stats(asset_path('pretrained', 'param_mean_std_62d_120x120.pkl'))
  # Text printed with 6 decimals: equal to the 3DDFA pickle to that precision.
  # (half a unit in the 6th decimal, plus float32 rounding of large values).
  for got, want in ((txt.mean, v1.mean), (txt.std, v1.std)):
    tol = 5.1e-7 + 1e-7 * np.abs(want)
    assert np.all(np.abs(got.astype(np.float64) - want) <= tol)
  # METHOD: the two pickles differ (a checkpoint belongs to one of them).
  assert np.abs(v1.mean - v2.mean).max() > 1.0
  assert np.abs(v1.std - v2.std).max() > 1.0


def test_whiten_jit_vmap_grad(rng):
  stats = P.ParamStats(rng.normal(size=62).astype(np.float32),
                       rng.uniform(0.5, 2, size=62).astype(np.float32))
  pw = jnp.asarray(rng.normal(size=(4, 62)).astype(np.float32))
  f = jax.jit(lambda x: P.dewhiten(x, stats))
  np.testing.assert_allclose(np.asarray(jax.vmap(f)(pw)),
                             np.asarray(pw) * stats.std + stats.mean, rtol=1e-6, atol=1e-6)
  g = jax.grad(lambda x: P.dewhiten(x, stats).sum())(pw[0])
  np.testing.assert_allclose(np.asarray(g), stats.std, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(P.whiten(f(pw), stats)), np.asarray(pw),
                             rtol=1e-5, atol=1e-5)


def _write_pickle(path, obj):
  with open(path, 'wb') as f:
    pickle.dump(obj, f)
  return path


def test_small_files_in_each_format(tmp_path, rng):
  mean = rng.normal(size=62).astype(np.float32)
  std = rng.uniform(0.1, 3, size=62).astype(np.float32)
  a = P.load_param_stats(_write_pickle(tmp_path / 'a.pkl', {'param_mean': mean, 'param_std': std}))
  b = P.load_param_stats(_write_pickle(tmp_path / 'b.pkl', {'mean': mean, 'std': std}))
  (tmp_path / 'txt').mkdir()
  np.savetxt(tmp_path / 'txt' / 'param_mean.txt', mean, fmt='%.9g')
  np.savetxt(tmp_path / 'txt' / 'param_std.txt', std, fmt='%.9g')
  c = P.load_param_stats(tmp_path / 'txt')
  for s in (a, b, c):
    np.testing.assert_array_equal(s.mean, mean)
    np.testing.assert_array_equal(s.std, std)
    assert s.mean.shape == (62,) and s.mean.dtype == np.float32


def _bad_stats(tmp_path, rng):
  mean = rng.normal(size=62).astype(np.float32)
  std = np.ones(62, np.float32)
  good = pickle.dumps({'mean': mean, 'std': std})
  nan = mean.copy()
  nan[5] = np.nan
  zero = std.copy()
  zero[3] = 0
  cases = {
      'missing.pkl': None,
      'text.pkl': b'this is not a pickle\n',
      'truncated.pkl': good[:len(good) // 2],
      'list.pkl': pickle.dumps([mean, std]),
      'nokeys.pkl': pickle.dumps({'mu': mean, 'sigma': std}),
      'short.pkl': pickle.dumps({'mean': mean[:61], 'std': std[:61]}),
      'nan.pkl': pickle.dumps({'param_mean': nan, 'param_std': std}),
      'zero_std.pkl': pickle.dumps({'mean': mean, 'std': zero}),
  }
  paths = []
  for name, data in cases.items():
    path = tmp_path / name
    if data is not None:
      path.write_bytes(data)
    paths.append(path)
  half = tmp_path / 'half_folder'
  half.mkdir()
  np.savetxt(half / 'param_mean.txt', mean)  # param_std.txt missing
  words = tmp_path / 'words_folder'
  words.mkdir()
  (words / 'param_mean.txt').write_text('a b c\n')
  (words / 'param_std.txt').write_text('1 2 3\n')
  return paths + [half, words]


def test_bad_stats_files_raise_dasl_error_naming_file(tmp_path, rng):
  for path in _bad_stats(tmp_path, rng):
    with pytest.raises(DaslError) as e:
      P.load_param_stats(path)
    assert str(path) in str(e.value), (path, str(e.value))
    assert '\n' not in str(e.value)
