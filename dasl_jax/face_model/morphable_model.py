"""The 3D morphable model as data, its loaders, and parameters -> vertices.

A :class:`MorphableModel` holds, in 3DDFA's interleaved layout (x, y, z of each
vertex in a row):

* ``u``      (3N,)     mean face (shape mean plus expression mean);
* ``w_shp``  (3N, 40)  shape basis;
* ``w_exp``  (3N, 10)  expression basis;
* ``keypoints`` (68,)  vertex index of each iBUG-68 landmark;
* ``triangles`` (T, 3) 0-based vertex indices, or None;
* ``colors`` (N, 3)    per-vertex RGB in [0, 1], or None.

It is a pytree (arrays are leaves), so it can be passed into jitted functions.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import jax.numpy as jnp
import numpy as np
from flax import struct

from dasl_jax.geometry import camera
from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError, check_shape


@struct.dataclass
class MorphableModel:
  u: jnp.ndarray
  w_shp: jnp.ndarray
  w_exp: jnp.ndarray
  keypoints: jnp.ndarray
  # Leaves, not static metadata: jit compares static fields with ==, which
  # fails on numpy arrays as soon as a second model object is passed in.
  triangles: Optional[np.ndarray] = struct.field(pytree_node=True, default=None)
  colors: Optional[np.ndarray] = struct.field(pytree_node=True, default=None)
  name: str = struct.field(pytree_node=False, default='')

  @property
  def n_vertices(self) -> int:
    return self.u.shape[0] // 3

  def landmark_model(self) -> 'MorphableModel':
    """The same model restricted to its 68 landmark vertices (keypoints = 0..67).

    Idempotent (a landmark model maps to itself), so callers never need to guess
    from the row count whether a model is already one; call it once at set-up.
    """
    # jnp, not np: keypoints is a pytree leaf, so a traced array under jit.
    idx = jnp.asarray(self.keypoints)
    rows = (3 * idx[:, None] + jnp.arange(3)[None]).reshape(-1)
    return MorphableModel(
        u=self.u[rows], w_shp=self.w_shp[rows], w_exp=self.w_exp[rows],
        keypoints=jnp.arange(68, dtype=jnp.int32), triangles=None, colors=None,
        name=f'{self.name}[68 landmarks]')


def shape(model: MorphableModel, alpha_shp, alpha_exp):
  """Object-space vertices from coefficients.

  Args:
    model: the morphable model (N vertices).
    alpha_shp: (..., 40); alpha_exp: (..., 10).
  Returns:
    (..., N, 3) ``u + w_shp @ alpha_shp + w_exp @ alpha_exp``.
  """
  xp = camera.array_module(alpha_shp, alpha_exp)  # numpy coefficients: numpy (host)
  flat = (xp.asarray(model.u) + xp.einsum('vk,...k->...v', xp.asarray(model.w_shp), alpha_shp)
          + xp.einsum('vk,...k->...v', xp.asarray(model.w_exp), alpha_exp))
  return flat.reshape(flat.shape[:-1] + (-1, 3))


def vertices(model: MorphableModel, p):
  """Camera-space vertices ``fR @ S + t`` (before the pixel y-flip).

  Args:
    p: (..., 62) de-whitened parameters.
  Returns:
    (..., N, 3).
  """
  fR, t, a_shp, a_exp = P.split(p)
  return camera.transform(shape(model, a_shp, a_exp), fR, t)


def landmarks3d(model: MorphableModel, p):
  """The 68 landmarks in camera space: (..., 62) -> (..., 68, 3).

  Pass ``model.landmark_model()`` for speed; a full model is gathered here.
  """
  # Always gather: a landmark model's keypoints are 0..67 (an identity gather),
  # while guessing from the row count would skip the gather of a 68-vertex mesh.
  return vertices(model.landmark_model(), p)


def landmarks2d(model: MorphableModel, p, convention, size=camera.CROP_SIZE):
  """The 68 landmarks in crop pixels: (..., 62) -> (..., 68, 2)."""
  return camera.to_crop_pixels(landmarks3d(model, p), convention, size)


def vertices2d(model: MorphableModel, p, convention, size=camera.CROP_SIZE):
  """All vertices in crop pixels with depth: (..., 62) -> (..., N, 3) (x, y, z)."""
  v = vertices(model, p)
  xp = camera.array_module(v)
  return xp.concatenate([camera.to_crop_pixels(v, convention, size), v[..., 2:]], -1)


# ----------------------------------------------------------------------------
# Loaders. Every one checks shapes and names the file and the problem.


def _load_npy(path: Path, what: str):
  if not path.exists():
    raise DaslError(f'{path}: missing ({what})')
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:
    raise DaslError(f'{path}: cannot read .npy ({type(e).__name__}: {e})') from None


def _load_pickle(path: Path):
  if not path.exists():
    raise DaslError(f'{path}: file not found')
  try:
    with open(path, 'rb') as f:
      return pickle.load(f, encoding='latin1')
  except Exception as e:
    raise DaslError(f'{path}: not a readable pickle ({type(e).__name__}: {e})') from None


def _build(u, w_shp, w_exp, keypoints, source, triangles=None, colors=None, files=None):
  """Check and assemble a model. ``files`` maps 'mean', 'shape basis',
  'expression basis', 'keypoints' to the file each came from (for messages);
  anything not named there is reported as ``source``."""
  where = lambda what: (files or {}).get(what, source)
  u = np.asarray(u, np.float32).reshape(-1)
  if u.size % 3:
    raise DaslError(f'{where("mean")}: mean has {u.size} values, not a multiple of 3')
  n3 = u.size
  w_shp = np.asarray(w_shp, np.float32)
  w_exp = np.asarray(w_exp, np.float32)
  if w_shp.ndim != 2 or w_shp.shape[0] != n3 or w_shp.shape[1] < P.N_SHAPE:
    raise DaslError(f'{where("shape basis")}: shape basis must be ({n3}, >=40), got {w_shp.shape}')
  if w_exp.ndim != 2 or w_exp.shape[0] != n3 or w_exp.shape[1] < P.N_EXP:
    raise DaslError(f'{where("expression basis")}: expression basis must be ({n3}, >=10), '
                    f'got {w_exp.shape}')
  kp = np.asarray(keypoints).reshape(-1).astype(np.int64)
  if kp.size != 68:
    raise DaslError(f'{where("keypoints")}: need 68 landmark vertex indices, got {kp.size}')
  if kp.min() < 0 or kp.max() >= n3 // 3:
    raise DaslError(f'{where("keypoints")}: landmark indices outside 0..{n3 // 3 - 1}')
  for name, a in (('mean', u), ('shape basis', w_shp), ('expression basis', w_exp)):
    if not np.all(np.isfinite(a)):
      raise DaslError(f'{where(name)}: {name} holds NaN or inf')
  if triangles is not None:
    triangles = np.asarray(triangles)
    if triangles.ndim != 2 or triangles.shape[1] != 3:
      raise DaslError(f'{source}: triangles must be (T, 3), got {triangles.shape}')
    # A 1-based file read as 0-based would reach vertex N: refuse it.
    if triangles.size and (triangles.min() < 0 or triangles.max() >= n3 // 3):
      raise DaslError(f'{source}: triangle vertex indices span {triangles.min()}..'
                      f'{triangles.max()}, outside 0..{n3 // 3 - 1}')
    triangles = triangles.astype(np.int32)
  return MorphableModel(
      u=jnp.asarray(u), w_shp=jnp.asarray(w_shp[:, :P.N_SHAPE]),
      w_exp=jnp.asarray(w_exp[:, :P.N_EXP]), keypoints=jnp.asarray(kp, jnp.int32),
      triangles=triangles, colors=colors, name=source)


def keypoints_from_flat(flat_indices, source='keypoints'):
  """3DDFA's 204 flat x/y/z indices -> 68 vertex indices (value // 3 of each x)."""
  flat = np.asarray(flat_indices).reshape(-1)
  if flat.size != 204:
    raise DaslError(f'{source}: expected 204 flat indices (68 x/y/z), got {flat.size}')
  xyz = flat.reshape(68, 3)
  if not (np.all(xyz[:, 1] == xyz[:, 0] + 1) and np.all(xyz[:, 2] == xyz[:, 0] + 2)
          and np.all(xyz[:, 0] % 3 == 0)):
    raise DaslError(f'{source}: flat indices are not x/y/z triples of vertices')
  return xyz[:, 0] // 3


def load_3ddfa_configs(folder) -> MorphableModel:
  """3DDFA's ``train.configs`` folder: u_shp, u_exp, w_shp_sim, w_exp_sim, keypoints_sim."""
  folder = Path(folder)
  u_shp = _load_npy(folder / 'u_shp.npy', 'mean shape')
  u_exp = _load_npy(folder / 'u_exp.npy', 'mean expression')
  w_shp = _load_npy(folder / 'w_shp_sim.npy', 'shape basis; 3DDFA train.configs')
  w_exp = _load_npy(folder / 'w_exp_sim.npy', 'expression basis; 3DDFA train.configs')
  kp = _load_npy(folder / 'keypoints_sim.npy', 'landmark indices')
  if u_shp.size != u_exp.size:
    raise DaslError(f'{folder / "u_exp.npy"}: has {u_exp.size} values, '
                    f'u_shp.npy has {u_shp.size}')
  for name, a in (('u_shp.npy', u_shp), ('u_exp.npy', u_exp)):
    if not np.all(np.isfinite(a)):  # named before the two are summed
      raise DaslError(f'{folder / name}: mean holds NaN or inf')
  files = {'mean': str(folder / 'u_shp.npy'), 'shape basis': str(folder / 'w_shp_sim.npy'),
           'expression basis': str(folder / 'w_exp_sim.npy'),
           'keypoints': str(folder / 'keypoints_sim.npy')}
  return _build(u_shp.reshape(-1) + u_exp.reshape(-1), w_shp, w_exp,
                keypoints_from_flat(kp, files['keypoints']), str(folder), files=files)


def _triangles(tri, where):
  """(3, T) or (T, 3) 0-based triangles -> (T, 3) int64."""
  tri = np.asarray(tri)
  if tri.ndim != 2 or 3 not in tri.shape:
    raise DaslError(f'{where}: triangles must be (3, T) or (T, 3), got {tri.shape}')
  return (tri.T if tri.shape[0] == 3 and tri.shape[1] != 3 else tri).astype(np.int64)


# 3DDFA_V2 keeps the triangles of bfm_noneck_v3.pkl in a file beside it
# (configs/tri.pkl; its BFMModel: "this tri/face is re-built for bfm_noneck_v3").
NONECK_TRI = 'tri.pkl'


def load_bfm_noneck(path) -> MorphableModel:
  """3DDFA_V2's ``bfm_noneck_v3.pkl``: keys u, w_shp, w_exp, keypoints (tri optional).

  ``u`` already includes the expression mean; the first 40 / 10 columns are used.
  Triangles (0-based, as 3DDFA_V2 stores them): ``tri.pkl`` beside the file when
  it is there (3DDFA_V2's ``configs/`` layout, where the noneck model's own
  ``tri`` is not used), else the pickle's ``tri`` key.
  """
  path = Path(path)
  d = _load_pickle(path)
  if not isinstance(d, dict):
    raise DaslError(f'{path}: expected a dict, got {type(d).__name__}')
  missing = [k for k in ('u', 'w_shp', 'w_exp', 'keypoints') if k not in d]
  if missing:
    raise DaslError(f'{path}: missing keys {missing} (has {sorted(d)})')
  tri, tri_file = d.get('tri'), path.parent / NONECK_TRI
  where = str(path)
  if tri_file.exists() and tri_file != path:
    tri = _load_pickle(tri_file)
    where = f'{path} (triangles {tri_file})'
  tri = None if tri is None else _triangles(tri, where)
  return _build(d['u'], d['w_shp'], d['w_exp'],
                keypoints_from_flat(d['keypoints'], f'{path}: keypoints'), where,
                triangles=tri)


def load_keypoints68(folder) -> MorphableModel:
  """The 68-landmark-only basis: ``u_base.txt`` (204,), ``w_shp_base.txt`` (204, 40),
  ``w_exp_base.txt`` (204, 10), rows x/y/z interleaved per landmark."""
  folder = Path(folder)
  arrays = []
  for name, expected in (('u_base.txt', (204,)), ('w_shp_base.txt', (204, 40)),
                         ('w_exp_base.txt', (204, 10))):
    f = folder / name
    if not f.exists():
      raise DaslError(f'{f}: missing (68-landmark basis folder)')
    try:
      a = np.loadtxt(f, dtype=np.float32, ndmin=1 if len(expected) == 1 else 2)
    except ValueError as e:
      raise DaslError(f'{f}: cannot parse numbers ({e})') from None
    check_shape(a, expected, str(f))
    arrays.append(a)
  files = {'mean': str(folder / 'u_base.txt'), 'shape basis': str(folder / 'w_shp_base.txt'),
           'expression basis': str(folder / 'w_exp_base.txt')}
  return _build(arrays[0], arrays[1], arrays[2], np.arange(68), str(folder), files=files)


def load_model_paf(path, reference: Optional[MorphableModel] = None,
                   off_surface=None) -> MorphableModel:
  """The 4,096-vertex ``Model_PAF.pkl`` basis (a 64x64 grid over the face).

  The file has no landmarks nor triangles. Landmarks are the grid vertices
  nearest to ``reference``'s 68 landmarks on the mean face (pass the
  keypoints68 model); triangles come from the grid, without the triangles
  touching vertices flagged in ``off_surface`` (N,) bool.
  """
  path = Path(path)
  d = _load_pickle(path)
  if not isinstance(d, dict):
    raise DaslError(f'{path}: expected a dict, got {type(d).__name__}')
  missing = [k for k in ('mu_filter', 'w_filter', 'w_exp_filter') if k not in d]
  if missing:
    raise DaslError(f'{path}: missing keys {missing} (has {sorted(d)})')
  u = np.asarray(d['mu_filter'], np.float32).reshape(-1)
  n = u.size // 3
  side = int(round(np.sqrt(n)))
  if side * side != n:
    raise DaslError(f'{path}: {n} vertices do not form a square grid')
  if reference is not None:
    ref = np.asarray(shape(reference.landmark_model(), np.zeros(40, np.float32),
                           np.zeros(10, np.float32)))
    mean = u.reshape(-1, 3)
    kp = np.argmin(((mean[None] - ref[:, None]) ** 2).sum(-1), axis=1)
  else:
    kp = np.zeros(68, np.int64)
  tri = grid_triangles(side, side, off_surface)
  return _build(u, d['w_filter'], d['w_exp_filter'], kp, str(path), triangles=tri)


def grid_triangles(rows, cols, drop=None):
  """Two triangles per cell of a row-major grid, without those touching ``drop``."""
  r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing='ij')
  a = (r * cols + c).reshape(-1)
  b, d_, e = a + 1, a + cols, a + cols + 1
  tri = np.concatenate([np.stack([a, d_, b], 1), np.stack([b, d_, e], 1)])
  if drop is not None:
    drop = np.asarray(drop, bool)
    tri = tri[~drop[tri].any(axis=1)]
  return tri.astype(np.int32)


def load_shape_sim_mat(path, u_exp=None):
  """``Model_Shape_Sim.mat``: full-resolution mean mesh, texture and topology.

  The file's ``mu_shape`` is the shape mean alone (it equals ``u_shp.npy``);
  the mean face also needs the expression mean, thousands of units away.

  Args:
    path: the .mat file.
    u_exp: optional (3N,) or (3N, 1) expression mean; default: a sibling
      ``u_exp.npy`` when there is one.
  Returns a dict with ``mu_shape`` (N, 3), ``mean`` (N, 3) = mu_shape + u_exp
  (only when an expression mean was found), ``tex`` (N, 3) in [0, 1] when
  present, ``triangles`` (T, 3) 0-based, ``keypoints`` (68,) 0-based.
  """
  import scipy.io
  path = Path(path)
  if not path.exists():
    raise DaslError(f'{path}: file not found')
  try:
    m = scipy.io.loadmat(str(path))
  except Exception as e:
    raise DaslError(f'{path}: not a readable MATLAB file ({type(e).__name__}: {e})') from None
  for k in ('mu_shape', 'tri', 'keypoints'):
    if k not in m:
      raise DaslError(f'{path}: missing variable {k}')
  mu = np.asarray(m['mu_shape'], np.float32).reshape(-1, 3)
  n = len(mu)
  # The file stores uint16: cast before the 1-based -> 0-based shift.
  tri = np.asarray(m['tri']).astype(np.int64)
  tri = (tri.T if tri.shape[0] == 3 and tri.shape[1] != 3 else tri) - 1
  kp = np.asarray(m['keypoints']).reshape(-1).astype(np.int64) - 1
  if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= n:
    raise DaslError(f'{path}: tri must be 1-based triangles of {n} vertices, '
                    f'got shape {tri.shape} spanning {tri.min() + 1}..{tri.max() + 1}')
  if kp.size != 68 or kp.min() < 0 or kp.max() >= n:
    raise DaslError(f'{path}: keypoints must be 68 1-based vertex indices of {n}')
  out = {'mu_shape': mu, 'triangles': tri.astype(np.int32), 'keypoints': kp}
  exp_source = 'the u_exp argument'
  if u_exp is None and (path.parent / 'u_exp.npy').exists():
    exp_source = str(path.parent / 'u_exp.npy')
    u_exp = _load_npy(path.parent / 'u_exp.npy', 'mean expression')
  if u_exp is not None:
    u_exp = np.asarray(u_exp, np.float32)
    if u_exp.size != mu.size:
      raise DaslError(f'{path}: expression mean from {exp_source} has {u_exp.size} values, '
                      f'mu_shape {mu.size}')
    u_exp = u_exp.reshape(-1, 3)
    out['mean'] = mu + u_exp
  if 'mu_tex' in m:
    tex = np.asarray(m['mu_tex'], np.float32).reshape(-1, 3)
    out['tex'] = np.clip(tex / 255.0, 0, 1)
  return out


def load(path) -> MorphableModel:
  """Load a morphable model from whatever the user points at.

  * a folder with ``w_shp_sim.npy`` (3DDFA ``train.configs``);
  * a ``bfm_noneck_v3*.pkl`` file (3DDFA_V2);
  * a ``Model_PAF.pkl`` file (landmarks taken from a sibling ``keypoints68/``);
  * a folder with ``u_base.txt`` or a ``keypoints68/`` subfolder (68 landmarks only);
  * a folder with ``bfm_noneck_v3.pkl`` (3DDFA_V2's ``configs/``).
  """
  path = Path(path)
  if not path.exists():
    raise DaslError(f'{path}: morphable model path not found')
  if path.is_dir():
    if (path / 'w_shp_sim.npy').exists():
      return load_3ddfa_configs(path)
    if (path / 'u_base.txt').exists():
      return load_keypoints68(path)
    if (path / 'keypoints68' / 'u_base.txt').exists():
      return load_keypoints68(path / 'keypoints68')
    if (path / 'bfm_noneck_v3.pkl').exists():  # 3DDFA_V2's configs/ folder
      return load_bfm_noneck(path / 'bfm_noneck_v3.pkl')
    raise DaslError(f'{path}: no morphable model here (looked for w_shp_sim.npy, '
                    'u_base.txt, keypoints68/u_base.txt, bfm_noneck_v3.pkl)')
  d = _load_pickle(path)
  if isinstance(d, dict) and 'mu_filter' in d:
    ref_dir = path.parent / 'keypoints68'
    ref = load_keypoints68(ref_dir) if ref_dir.exists() else None
    return load_model_paf(path, reference=ref)
  if isinstance(d, dict) and 'u' in d:
    return load_bfm_noneck(path)
  raise DaslError(f'{path}: not a known morphable model file (keys: '
                  f'{sorted(d) if isinstance(d, dict) else type(d).__name__})')
