"""Morphable model: vertices, landmarks, loaders (real and small written files).

The numpy reference follows METHOD.md section 1 as 3DDFA writes it:
``fR @ (u + W_shp a + W_exp b).reshape(3, -1, order='F') + t``, then the y-flip.
"""
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.face_model import morphable_model as mm
from dasl_jax.errors import DaslError
from tests.helpers.asset_marks import asset_path, requires_assets

N = 100  # vertices of the small written models


def _np_vertices(u, w_shp, w_exp, p):
  """(3N,), (3N, 40), (3N, 10), (62,) -> (3, N) camera-space, 3DDFA style."""
  pose = p[:12].reshape(3, 4)
  s = (u + w_shp @ p[12:52] + w_exp @ p[52:62]).reshape(3, -1, order='F')
  return pose[:, :3] @ s + pose[:, 3:]


def _np_crop(v, convention):
  """(3, K) camera -> (2, K) crop pixels."""
  if convention == 'v1':
    return np.stack([v[0], 121 - v[1]])
  return np.stack([v[0] - 1, 120 - v[1]])


def _small_arrays(rng, n=N, n_shp=199, n_exp=29):
  """Arrays of a 3DDFA-format model with n vertices and full-size column counts."""
  u_shp = rng.normal(size=(3 * n, 1)).astype(np.float32) * 1e4
  u_exp = rng.normal(size=(3 * n, 1)).astype(np.float32) * 1e3
  w_shp = rng.normal(size=(3 * n, n_shp)).astype(np.float32) * 1e3
  w_exp = rng.normal(size=(3 * n, n_exp)).astype(np.float32)
  kp_vertex = rng.choice(n, 68, replace=False)
  kp_flat = (3 * kp_vertex[:, None] + np.arange(3)).reshape(-1).astype(np.int64)
  return dict(u_shp=u_shp, u_exp=u_exp, w_shp=w_shp, w_exp=w_exp,
              kp_vertex=kp_vertex, kp_flat=kp_flat)


def _write_configs(folder, a):
  folder.mkdir(exist_ok=True)
  np.save(folder / 'u_shp.npy', a['u_shp'])
  np.save(folder / 'u_exp.npy', a['u_exp'])
  np.save(folder / 'w_shp_sim.npy', a['w_shp'])
  np.save(folder / 'w_exp_sim.npy', a['w_exp'])
  np.save(folder / 'keypoints_sim.npy', a['kp_flat'])
  return folder


def _noneck_dict(a, n=N):
  tri = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)])  # (3, T), 0-based
  return {'u': a['u_shp'] + a['u_exp'], 'w_shp': a['w_shp'], 'w_exp': a['w_exp'],
          'keypoints': a['kp_flat'], 'tri': tri}


def _write_pickle(path, obj):
  with open(path, 'wb') as f:
    pickle.dump(obj, f)
  return path


def _params(rng, b=None):
  shape = (62,) if b is None else (b, 62)
  p = rng.normal(size=shape)
  p[..., :12] *= 1e-3
  p[..., [3, 7, 11]] = rng.uniform(40, 80, size=shape[:-1] + (3,))
  return p.astype(np.float32)


# ---------------------------------------------------------------------------


def test_reshape_convention(rng):
  flat = rng.normal(size=3 * 7)
  np.testing.assert_array_equal(flat.reshape(-1, 3), flat.reshape(3, -1, order='F').T)


def test_3ddfa_configs_folder(tmp_path, rng):
  a = _small_arrays(rng)
  folder = _write_configs(tmp_path / 'train.configs', a)
  for model in (mm.load_3ddfa_configs(folder), mm.load(folder)):
    assert model.n_vertices == N
    u = (a['u_shp'] + a['u_exp']).ravel()
    np.testing.assert_array_equal(np.asarray(model.u), u)
    np.testing.assert_array_equal(np.asarray(model.w_shp), a['w_shp'][:, :40])
    np.testing.assert_array_equal(np.asarray(model.w_exp), a['w_exp'][:, :10])
    np.testing.assert_array_equal(np.asarray(model.keypoints), a['kp_vertex'])
  p = _params(rng)
  want = _np_vertices(u, a['w_shp'][:, :40], a['w_exp'][:, :10], p.astype(np.float64))
  got = np.asarray(mm.vertices(model, p))
  assert got.shape == (N, 3)
  np.testing.assert_allclose(got, want.T, rtol=1e-4, atol=1e-3)
  lm = np.asarray(mm.landmarks3d(model, p))
  np.testing.assert_allclose(lm, want.T[a['kp_vertex']], rtol=1e-4, atol=1e-3)
  for conv in ('v1', 'v2'):
    np.testing.assert_allclose(np.asarray(mm.landmarks2d(model, p, conv)),
                               _np_crop(want[:, a['kp_vertex']], conv).T, rtol=1e-4, atol=1e-3)
    v2d = np.asarray(mm.vertices2d(model, p, conv))
    np.testing.assert_allclose(v2d[:, :2], _np_crop(want, conv).T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(v2d[:, 2], want[2], rtol=1e-4, atol=1e-3)
  # The landmark model is the same 68 rows.
  lmk = model.landmark_model()
  np.testing.assert_allclose(np.asarray(mm.vertices(lmk, p)), lm, rtol=1e-5, atol=1e-3)


def test_bfm_noneck_pickle(tmp_path, rng):
  a = _small_arrays(rng)
  d = _noneck_dict(a)
  path = _write_pickle(tmp_path / 'bfm_noneck_v3.pkl', d)
  for model in (mm.load_bfm_noneck(path), mm.load(path)):
    np.testing.assert_array_equal(np.asarray(model.u), d['u'].ravel())
    np.testing.assert_array_equal(np.asarray(model.w_shp), a['w_shp'][:, :40])
    np.testing.assert_array_equal(np.asarray(model.w_exp), a['w_exp'][:, :10])
    np.testing.assert_array_equal(np.asarray(model.keypoints), a['kp_vertex'])
    np.testing.assert_array_equal(model.triangles, d['tri'].T)
  # (T, 3) triangles are taken as they are.
  d2 = dict(d, tri=d['tri'].T.copy())
  m2 = mm.load_bfm_noneck(_write_pickle(tmp_path / 'b2.pkl', d2))
  np.testing.assert_array_equal(m2.triangles, d['tri'].T)


def test_bfm_noneck_as_3ddfa_v2_keeps_it_for_bfm_flag(tmp_path, rng):
  """3DDFA_V2's layout: configs/bfm_noneck_v3.pkl with the triangles in configs/tri.pkl
  beside it (its BFMModel reads those, not the pickle's own). --bfm takes the file or
  the folder; the dense model is the pickle, the landmark model its keypoint rows."""
  from dasl_jax.face_model import bfm
  a = _small_arrays(rng)
  d = _noneck_dict(a)
  own = d['tri']
  d['tri'] = own[::-1].copy()  # the pickle's own triangles, not the ones to use
  configs = tmp_path / 'configs'
  configs.mkdir()
  path = _write_pickle(configs / 'bfm_noneck_v3.pkl', d)
  _write_pickle(configs / 'tri.pkl', own)  # (3, T), 0-based, as 3DDFA_V2 stores it
  for given in (path, configs):
    models = bfm.load_bfm_models(str(given))
    assert models.kind == 'bfm' and 'bfm_noneck_v3.pkl' in models.note
    np.testing.assert_array_equal(models.dense.triangles, own.T)
    np.testing.assert_array_equal(np.asarray(models.dense.u), d['u'].ravel())
    rows = (3 * a['kp_vertex'][:, None] + np.arange(3)).reshape(-1)
    np.testing.assert_array_equal(np.asarray(models.landmarks.u), d['u'].ravel()[rows])
    np.testing.assert_array_equal(np.asarray(models.landmarks.w_shp), a['w_shp'][rows, :40])
  assert mm.load(configs).n_vertices == N  # evaluate's --bfm reader takes the folder too
  # A tri.pkl that does not fit the vertices: one line naming the files.
  _write_pickle(configs / 'tri.pkl', own + N)
  bfm.load_bfm_models.cache_clear()
  with pytest.raises(DaslError, match=r'tri\.pkl.*outside 0\.\.'):
    bfm.load_bfm_models(str(path))
  with pytest.raises(DaslError, match='no such folder or file'):
    bfm.load_bfm_models(str(tmp_path / 'nope'))
  (tmp_path / 'x.txt').write_text('x')
  with pytest.raises(DaslError, match='expected a folder or 3DDFA_V2'):
    bfm.load_bfm_models(str(tmp_path / 'x.txt'))
  bfm.load_bfm_models.cache_clear()


def test_keypoints68_text_folder(tmp_path, rng):
  a = _small_arrays(rng, n_shp=40, n_exp=10)
  rows = (3 * a['kp_vertex'][:, None] + np.arange(3)).reshape(-1)
  u = (a['u_shp'] + a['u_exp']).ravel()
  folder = tmp_path / 'keypoints68'
  folder.mkdir()
  np.savetxt(folder / 'u_base.txt', u[rows], fmt='%.6f')
  np.savetxt(folder / 'w_shp_base.txt', a['w_shp'][rows], fmt='%.6f')
  np.savetxt(folder / 'w_exp_base.txt', a['w_exp'][rows], fmt='%.6f')
  for model in (mm.load_keypoints68(folder), mm.load(folder), mm.load(tmp_path)):
    assert model.n_vertices == 68
    np.testing.assert_array_equal(np.asarray(model.keypoints), np.arange(68))
    np.testing.assert_allclose(np.asarray(model.u), u[rows], atol=1e-3)
  p = _params(rng)
  want = _np_vertices(u, a['w_shp'], a['w_exp'], p.astype(np.float64))[:, a['kp_vertex']]
  np.testing.assert_allclose(np.asarray(mm.landmarks2d(model, p, 'v2')), _np_crop(want, 'v2').T,
                             rtol=1e-4, atol=1e-3)


def test_jit_vmap_grad_with_model_as_argument(tmp_path, rng):
  a = _small_arrays(rng)
  model = mm.load_3ddfa_configs(_write_configs(tmp_path / 'c', a))
  p = jnp.asarray(_params(rng, 3))
  eager = np.asarray(mm.landmarks2d(model, p, 'v1'))
  # The model is a pytree: pass it into jit / vmap as an argument.
  f = jax.jit(mm.landmarks2d, static_argnames=('convention', 'size'))
  np.testing.assert_allclose(np.asarray(f(model, p, 'v1')), eager, rtol=1e-5, atol=1e-3)
  g = jax.jit(jax.vmap(lambda q: mm.vertices(model, q)))
  np.testing.assert_allclose(np.asarray(g(p))[:, a['kp_vertex']],
                             np.asarray(mm.landmarks3d(model, p)), rtol=1e-5, atol=1e-3)
  f3 = jax.jit(mm.vertices2d, static_argnames=('convention', 'size'))
  assert f3(model, p, 'v2').shape == (3, N, 3)
  lmk = model.landmark_model()
  np.testing.assert_allclose(np.asarray(jax.jit(mm.landmarks3d)(lmk, p)),
                             np.asarray(mm.landmarks3d(model, p)), rtol=1e-5, atol=1e-3)


def test_models_with_triangles_pass_through_jit(tmp_path, rng):
  a = _small_arrays(rng)
  path = _write_pickle(tmp_path / 'bfm_noneck_v3.pkl', _noneck_dict(a))
  m1, m2 = mm.load_bfm_noneck(path), mm.load_bfm_noneck(path)
  assert m1.triangles is not None
  f = jax.jit(mm.vertices2d, static_argnames=('convention', 'size'))
  p = _params(rng)
  # A second model object (equal arrays, not the same objects) hits the cache.
  np.testing.assert_array_equal(np.asarray(f(m1, p, 'v1')), np.asarray(f(m2, p, 'v1')))


def test_68_vertex_mesh_is_still_gathered(rng):
  # A full mesh that happens to have 68 vertices, landmarks in another order.
  a = _small_arrays(rng, n=68, n_shp=40, n_exp=10)
  model = mm.MorphableModel(u=jnp.asarray((a['u_shp'] + a['u_exp']).ravel()),
                            w_shp=jnp.asarray(a['w_shp']), w_exp=jnp.asarray(a['w_exp']),
                            keypoints=jnp.asarray(a['kp_vertex'], jnp.int32))
  p = _params(rng)
  np.testing.assert_allclose(np.asarray(mm.landmarks3d(model, p)),
                             np.asarray(mm.vertices(model, p))[a['kp_vertex']], rtol=1e-6)


def test_gradient_wrt_params_matches_finite_difference(tmp_path, rng):
  a = _small_arrays(rng)
  model = mm.load_3ddfa_configs(_write_configs(tmp_path / 'c', a))
  w = rng.normal(size=(68, 2))
  with jax.enable_x64(True):
    m64 = model.replace(u=jnp.asarray(model.u, jnp.float64),
                        w_shp=jnp.asarray(model.w_shp, jnp.float64),
                        w_exp=jnp.asarray(model.w_exp, jnp.float64))
    loss = jax.jit(lambda q: jnp.sum(mm.landmarks2d(m64, q, 'v1') * w))
    p = jnp.asarray(_params(rng), jnp.float64)
    g = np.asarray(jax.jit(jax.grad(loss))(p))
    assert np.all(np.isfinite(g))
    for i in (0, 5, 7, 11, 12, 30, 51, 52, 61):
      e = np.zeros(62)
      e[i] = 1e-3 * max(1e-3, abs(float(p[i])))
      fd = (loss(p + e) - loss(p - e)) / (2 * e[i])
      np.testing.assert_allclose(g[i], float(fd), rtol=1e-6, atol=1e-6 * np.abs(g).max())
    assert g[11] == 0  # z translation does not move 2D landmarks


# ---------------------------------------------------------------------------
# Bad files: each raises DaslError whose message names the file.


def _bad_configs(tmp_path, rng):
  """(folder, name of the file the message must name) pairs."""
  cases = []

  def case(name, fname, edit):
    a = _small_arrays(rng, n=70, n_shp=45, n_exp=12)
    folder = _write_configs(tmp_path / name, a)
    edit(folder, a)
    cases.append((folder, fname))

  def trunc(folder, a):
    data = (folder / 'w_shp_sim.npy').read_bytes()
    (folder / 'w_shp_sim.npy').write_bytes(data[:len(data) // 2])
  case('truncated', 'w_shp_sim.npy', trunc)
  case('missing', 'w_exp_sim.npy', lambda f, a: (f / 'w_exp_sim.npy').unlink())
  case('rows', 'w_shp_sim.npy', lambda f, a: np.save(f / 'w_shp_sim.npy', a['w_shp'][:-3]))
  case('cols', 'w_exp_sim.npy', lambda f, a: np.save(f / 'w_exp_sim.npy', a['w_exp'][:, :9]))
  case('ushape', 'u_exp.npy', lambda f, a: np.save(f / 'u_exp.npy', a['u_exp'][:-3]))

  def nan(folder, a):
    u = a['u_shp'].copy()
    u[4] = np.nan
    np.save(folder / 'u_shp.npy', u)
  case('nan', 'u_shp.npy', nan)

  def nan_w(folder, a):
    w = a['w_exp'].copy()
    w[2, 3] = np.inf
    np.save(folder / 'w_exp_sim.npy', w)
  case('nan_w', 'w_exp_sim.npy', nan_w)
  case('kp_range', 'keypoints_sim.npy',
       lambda f, a: np.save(f / 'keypoints_sim.npy', a['kp_flat'] + 3 * 70))
  case('kp_count', 'keypoints_sim.npy',
       lambda f, a: np.save(f / 'keypoints_sim.npy', a['kp_flat'][:201]))
  case('kp_not_triples', 'keypoints_sim.npy',
       lambda f, a: np.save(f / 'keypoints_sim.npy', a['kp_flat'][::-1].copy()))
  case('pickled', 'u_shp.npy',
       lambda f, a: np.save(f / 'u_shp.npy', np.array([{'a': 1}], dtype=object), allow_pickle=True))
  return cases


def test_bad_configs_raise_dasl_error_naming_file(tmp_path, rng):
  for folder, fname in _bad_configs(tmp_path, rng):
    with pytest.raises(DaslError) as e:
      mm.load_3ddfa_configs(folder)
    msg = str(e.value)
    assert str(folder / fname) in msg, (folder.name, msg)
    assert '\n' not in msg


def test_bad_noneck_pickles_raise_dasl_error_naming_file(tmp_path, rng):
  a = _small_arrays(rng, n=70)
  good = _noneck_dict(a, n=70)
  nan = dict(good, w_shp=good['w_shp'].copy())
  nan['w_shp'][0, 0] = np.nan
  tri_bad = dict(good, tri=good['tri'] + 1)  # 1-based: reaches vertex 70 of 70
  cases = {
      'text.pkl': b'not a pickle at all',
      'truncated.pkl': pickle.dumps(good)[:500],
      'list.pkl': pickle.dumps([1, 2, 3]),
      'nokeys.pkl': pickle.dumps({k: v for k, v in good.items() if k != 'w_exp'}),
      'wrong_rows.pkl': pickle.dumps(dict(good, w_exp=good['w_exp'][:150])),
      'few_cols.pkl': pickle.dumps(dict(good, w_shp=good['w_shp'][:, :39])),
      'nan.pkl': pickle.dumps(nan),
      'kp_range.pkl': pickle.dumps(dict(good, keypoints=good['keypoints'] + 3 * 70)),
      'tri_range.pkl': pickle.dumps(tri_bad),
      'tri_shape.pkl': pickle.dumps(dict(good, tri=np.arange(8).reshape(2, 4))),
      'tri_1d.pkl': pickle.dumps(dict(good, tri=np.arange(9))),
  }
  for name, data in cases.items():
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DaslError) as e:
      mm.load_bfm_noneck(path)
    assert str(path) in str(e.value), (name, str(e.value))
  with pytest.raises(DaslError, match='missing.pkl'):
    mm.load_bfm_noneck(tmp_path / 'missing.pkl')


def test_bad_text_folders_and_unknown_paths(tmp_path, rng):
  a = _small_arrays(rng, n=68, n_shp=40, n_exp=10)
  u = (a['u_shp'] + a['u_exp']).ravel()

  def folder(name, u_txt=u, w_shp=a['w_shp'], w_exp=a['w_exp']):
    f = tmp_path / name
    f.mkdir()
    np.savetxt(f / 'u_base.txt', u_txt)
    np.savetxt(f / 'w_shp_base.txt', w_shp)
    if w_exp is not None:
      np.savetxt(f / 'w_exp_base.txt', w_exp)
    return f

  f = folder('short', w_shp=a['w_shp'][:, :39])
  with pytest.raises(DaslError, match=str(f / 'w_shp_base.txt')):
    mm.load_keypoints68(f)
  f = folder('noexp', w_exp=None)
  with pytest.raises(DaslError, match=str(f / 'w_exp_base.txt')):
    mm.load_keypoints68(f)
  bad_u = u.copy()
  bad_u[7] = np.nan
  f = folder('nan', u_txt=bad_u)
  with pytest.raises(DaslError, match=str(f / 'u_base.txt')):
    mm.load_keypoints68(f)
  f = folder('words')
  (f / 'u_base.txt').write_text('one two three\n')
  with pytest.raises(DaslError, match=str(f / 'u_base.txt')):
    mm.load_keypoints68(f)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(DaslError, match=str(empty)):
    mm.load(empty)
  with pytest.raises(DaslError, match='nowhere'):
    mm.load(tmp_path / 'nowhere')
  other = _write_pickle(tmp_path / 'other.pkl', {'something': 1})
  with pytest.raises(DaslError, match=str(other)):
    mm.load(other)


def test_grid_triangles_small():
  tri = mm.grid_triangles(3, 4)
  assert tri.shape == (2 * 2 * 3, 3)
  # Each cell's two triangles cover its four corners and share one diagonal.
  n_cells = 2 * 3
  seen = set()
  for k in range(n_cells):
    t1, t2 = set(tri[k].tolist()), set(tri[k + n_cells].tolist())
    a = min(t1)
    r, c = divmod(a, 4)
    assert c < 3 and r < 2
    assert t1 | t2 == {a, a + 1, a + 4, a + 5} and len(t1 & t2) == 2
    seen.add(a)
  assert len(seen) == n_cells
  drop = np.zeros(12, bool)
  drop[5] = True
  kept = mm.grid_triangles(3, 4, drop)
  assert not np.isin(kept, [5]).any() and len(kept) == len(tri) - 6


# ---------------------------------------------------------------------------
# Real files.


@requires_assets('bfm', 'keypoints68', 'u_base.txt')
@requires_assets('pretrained', 'mb05_reference_params62.npy')
@requires_assets('pretrained', 'mb05_reference_lms68_crop.npy')
def test_real_reference_landmarks_reproduced():
  model = mm.load(asset_path('bfm'))
  assert model.n_vertices == 68
  p = np.load(asset_path('pretrained', 'mb05_reference_params62.npy'))
  ref = np.load(asset_path('pretrained', 'mb05_reference_lms68_crop.npy'))  # (2000, 2, 68)
  got = np.asarray(jax.jit(mm.landmarks2d, static_argnames='convention')(model, p, convention='v2'))
  err = np.abs(got - ref.transpose(0, 2, 1)).max()
  assert err < 1e-3, err
  # The numpy reference agrees on a few images, and v1 is one pixel off in x and y.
  u, ws, we = (np.asarray(x, np.float64) for x in (model.u, model.w_shp, model.w_exp))
  for i in (0, 999, 1999):
    np.testing.assert_allclose(_np_crop(_np_vertices(u, ws, we, p[i].astype(np.float64)), 'v2'),
                               ref[i], atol=1e-3)
  v1 = np.asarray(mm.landmarks2d(model, p[:5], 'v1'))
  np.testing.assert_allclose(v1 - ref[:5].transpose(0, 2, 1), 1.0, atol=1e-3)


@requires_assets('bfm', 'u_shp.npy')
@requires_assets('bfm', 'keypoints68', 'u_base.txt')
def test_real_mean_face_at_keypoints_is_u_base():
  u_shp = np.load(asset_path('bfm', 'u_shp.npy')).astype(np.float64).ravel()
  u_exp = np.load(asset_path('bfm', 'u_exp.npy')).astype(np.float64).ravel()
  kp = np.load(asset_path('bfm', 'keypoints_sim.npy'))
  u_base = np.loadtxt(asset_path('bfm', 'keypoints68', 'u_base.txt'))
  assert kp.shape == (204,) and u_shp.shape == (159645,)
  np.testing.assert_allclose((u_shp + u_exp)[kp], u_base, rtol=0, atol=5.1e-7 + 1e-7 * np.abs(u_base).max())
  # METHOD: u_shp alone is wrong by thousands of units.
  assert np.abs(u_shp[kp] - u_base).max() > 1000
  # keypoints_sim are x/y/z triples of vertices.
  xyz = kp.reshape(68, 3)
  np.testing.assert_array_equal(xyz - xyz[:, :1], np.tile([0, 1, 2], (68, 1)))
  np.testing.assert_array_equal(np.asarray(mm.keypoints_from_flat(kp)), xyz[:, 0] // 3)


@requires_assets('bfm', 'Model_PAF.pkl')
@requires_assets('bfm', 'keypoints68', 'u_base.txt')
@requires_assets('bfm', 'u_shp.npy')
def test_real_model_paf():
  model = mm.load(asset_path('bfm', 'Model_PAF.pkl'))
  assert model.n_vertices == 4096
  again = mm.load_model_paf(asset_path('bfm', 'Model_PAF.pkl'), reference=mm.load(asset_path('bfm')))
  np.testing.assert_array_equal(np.asarray(again.keypoints), np.asarray(model.keypoints))
  p = np.zeros(62, np.float32)
  p[[0, 5, 10]] = 1e-3
  f = jax.jit(mm.landmarks2d, static_argnames='convention')
  np.testing.assert_array_equal(np.asarray(f(model, p, convention='v1')),
                                np.asarray(f(again, p, convention='v1')))
  assert model.u.shape == (12288,) and model.w_shp.shape == (12288, 40) and model.w_exp.shape == (12288, 10)
  tri = model.triangles
  assert tri.shape == (2 * 63 * 63, 3) and tri.min() == 0 and tri.max() == 4095
  assert len(np.unique(np.sort(tri, 1), axis=0)) == len(tri)
  assert np.all((tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2]))
  # Its landmarks lie near the BFM's 68 landmarks on the mean face (README: the
  # grid is a resampling, median ~0.3% of the face width off the BFM vertices).
  u_full = (np.load(asset_path('bfm', 'u_shp.npy')) + np.load(asset_path('bfm', 'u_exp.npy'))).reshape(-1, 3)
  width = u_full[:, 0].max() - u_full[:, 0].min()
  bfm_lm = np.loadtxt(asset_path('bfm', 'keypoints68', 'u_base.txt')).reshape(68, 3)
  paf_lm = np.asarray(model.u).reshape(-1, 3)[np.asarray(model.keypoints)]
  d = np.linalg.norm(paf_lm - bfm_lm, axis=1) / width
  assert d.max() < 0.03, d.max()
  assert len(np.unique(np.asarray(model.keypoints))) >= 60
  # The PAF mean includes the mean expression: same scale as u_shp + u_exp.
  paf = np.asarray(model.u).reshape(-1, 3)
  assert abs((paf[:, 0].max() - paf[:, 0].min()) / width - 1) < 0.5


@requires_assets('bfm', 'Model_Shape_Sim.mat')
@requires_assets('bfm', 'u_shp.npy')
def test_real_shape_sim_mat():
  d = mm.load_shape_sim_mat(asset_path('bfm', 'Model_Shape_Sim.mat'))
  n = 53215
  assert d['triangles'].shape == (105840, 3)
  assert d['triangles'].min() == 0 and d['triangles'].max() == n - 1
  kp = np.load(asset_path('bfm', 'keypoints_sim.npy'))
  np.testing.assert_array_equal(d['keypoints'], kp[::3] // 3)
  u_shp = np.load(asset_path('bfm', 'u_shp.npy')).reshape(-1, 3)
  u_exp = np.load(asset_path('bfm', 'u_exp.npy')).reshape(-1, 3)
  # The file's mu_shape is the shape mean alone (no expression mean) ...
  np.testing.assert_allclose(d['mu_shape'], u_shp, atol=1e-2)
  # ... so the mean face is mu_shape + u_exp, thousands of units away from it.
  np.testing.assert_allclose(d['mean'], u_shp + u_exp, rtol=1e-6, atol=1e-2)
  assert np.abs(d['mean'] - d['mu_shape']).max() > 1000
  assert d['tex'].shape == (n, 3) and 0 <= d['tex'].min() and d['tex'].max() <= 1


def test_small_paf_and_mat_files_and_their_errors(tmp_path, rng):
  import scipy.io
  side = 5
  n = side * side
  paf = {'mu_filter': rng.normal(size=(3 * n, 1)).astype(np.float32),
         'w_filter': rng.normal(size=(3 * n, 40)).astype(np.float32),
         'w_exp_filter': rng.normal(size=(3 * n, 10)).astype(np.float32)}
  model = mm.load_model_paf(_write_pickle(tmp_path / 'paf.pkl', paf))
  assert model.n_vertices == n and model.triangles.shape == (2 * 4 * 4, 3)
  np.testing.assert_array_equal(np.asarray(model.u), paf['mu_filter'].ravel())
  bad = {'nokey.pkl': {k: v for k, v in paf.items() if k != 'w_filter'},
         'notsquare.pkl': dict(paf, mu_filter=paf['mu_filter'][:-3])}
  for name, d in bad.items():
    with pytest.raises(DaslError, match=str(tmp_path / name)):
      mm.load_model_paf(_write_pickle(tmp_path / name, d))
  # A small Model_Shape_Sim.mat: 1-based uint16 triangles and keypoints.
  nv = 70
  mu = rng.normal(size=(3 * nv, 1)).astype(np.float32)
  tri = np.stack([np.arange(1, nv - 1), np.arange(2, nv), np.arange(3, nv + 1)]).astype(np.uint16)
  kp = rng.choice(nv, 68, replace=False) + 1
  mat = tmp_path / 'Model_Shape_Sim.mat'
  scipy.io.savemat(mat, {'mu_shape': mu, 'mu_tex': np.full((3 * nv, 1), 127.5, np.float32),
                         'tri': tri, 'keypoints': kp[None].astype(np.uint16)})
  d = mm.load_shape_sim_mat(mat)
  assert 'mean' not in d  # no expression mean next to it: no mean face claimed
  np.testing.assert_array_equal(d['triangles'], tri.T.astype(np.int64) - 1)
  np.testing.assert_array_equal(d['keypoints'], kp - 1)
  np.testing.assert_allclose(d['tex'], 0.5)
  u_exp = rng.normal(size=(3 * nv, 1)).astype(np.float32)
  np.save(tmp_path / 'u_exp.npy', u_exp)
  d = mm.load_shape_sim_mat(mat)
  np.testing.assert_allclose(d['mean'], (mu + u_exp).reshape(-1, 3))
  scipy.io.savemat(tmp_path / 'zero.mat', {'mu_shape': mu, 'tri': tri - 1,
                                           'keypoints': kp[None].astype(np.uint16)})
  with pytest.raises(DaslError, match=str(tmp_path / 'zero.mat')):
    mm.load_shape_sim_mat(tmp_path / 'zero.mat')
  scipy.io.savemat(tmp_path / 'notri.mat', {'mu_shape': mu})
  with pytest.raises(DaslError, match=str(tmp_path / 'notri.mat')):
    mm.load_shape_sim_mat(tmp_path / 'notri.mat')
  (tmp_path / 'text.mat').write_text('hello')
  with pytest.raises(DaslError, match=str(tmp_path / 'text.mat')):
    mm.load_shape_sim_mat(tmp_path / 'text.mat')
