"""Synthetic training data: rendered faces with exact labels, from any morphable model.

``SyntheticFaces(model, kind, size, seed, param_stats)`` is a random-access
source (``__len__``, ``__getitem__``; Grain-compatible): example ``i`` is a pure
function of ``(seed, kind, i)``, generated on the fly in about a millisecond,
or served from an in-memory / ``.npz`` cache after :meth:`SyntheticFaces.materialize`.

Kinds (dicts of numpy arrays in the batch format of docs/ARCHITECTURE.md):

* ``'3d'``: 3D-annotated, like 300W-LP crops: ``image`` uint8 (120, 120, 3)
  BGR, ``params`` float32 (62,) whitened, ``lms68`` float32 (68, 2) crop
  pixels, ``points18`` float32 (18, 2) detector-like noisy landmarks,
  ``mask18`` float32 (18,) ones.
* ``'wild'``: 2D-only, "in the wild": ``image``, ``points18``, ``mask18`` and,
  for evaluation only, ``lms68``. A visible domain shift from ``'3d'``: more
  frontal poses, coloured harsher light, wider skin tones, busier
  backgrounds, stronger blur, noise and JPEG artefacts, looser crops.
* ``'heldout'``: like ``'3d'`` from a separate seed stream (a fixed test split).

Crops follow 3DDFA's: the face is centred, its 68-landmark box about 84 px
(measured on AFLW2000-3D crops) with a few pixels of jitter; yaw up to +-90
degrees with many near-frontal faces and fewer large yaws (like 300W-LP),
pitch and roll of a few tens of degrees.

Labels are exact: ``lms68`` is the projection of the label model's landmarks
with the sampled (de-whitened) parameters, through the camera module's pixel
convention.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.geometry import landmarks as LM
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.geometry import params as P
from dasl_jax.viz import render
from dasl_jax.face_model import synthetic as sm
from dasl_jax.errors import DaslError

KINDS = ('3d', 'wild', 'heldout')
# Separate seed streams per kind, so the held-out split never overlaps training.
_STREAM = {'3d': 0, 'wild': 1, 'heldout': 2, 'stats': 3}
CROP = camera.CROP_SIZE
# The 68-landmark box of 3DDFA-style crops: about 84 px on its longer side,
# centred (measured on the 2,000 AFLW2000-3D crops: median 84, 5-95% 79-90).
BOX_PX = 84.0
# Images are drawn in 0-based pixel coordinates, i.e. 3DDFA_V2's convention
# ('v2'); v1 coordinates are 1-based (3DDFA_V2 subtracts 1 "for Python
# compatibility"). Labels use the dataset's convention, so v1 labels relate to
# the pixels exactly as 300W-LP's v1 labels relate to its crops.
RENDER_CONVENTION = 'v2'
# Centre of the landmark box in 0-based pixels (AFLW2000-3D crops: median 59.7-59.8).
BOX_CENTRE = 59.75


# ----------------------------------------------------------------------------
# Coefficient priors: how shape and expression coefficients are drawn.


@dataclasses.dataclass(frozen=True)
class Prior:
  """Distribution of the 40 shape and 10 expression coefficients.

  Shape: ``N(shp_mean, shp_std)``. Expression: each component is active with
  probability ``exp_active``; an active one is ``U(exp_low, exp_high)``, an
  inactive one ``exp_mean`` plus ``N(0, exp_std)`` jitter (all clipped to
  ``[exp_low, exp_high]``).
  """
  shp_mean: np.ndarray
  shp_std: np.ndarray
  exp_mean: np.ndarray
  exp_std: np.ndarray
  exp_low: np.ndarray
  exp_high: np.ndarray
  exp_active: np.ndarray

  def sample(self, rng):
    """-> alpha_shp (40,), alpha_exp (10,) float64."""
    a_shp = self.shp_mean + self.shp_std * rng.standard_normal(P.N_SHAPE)
    active = rng.random(P.N_EXP) < self.exp_active
    uni = self.exp_low + (self.exp_high - self.exp_low) * rng.random(P.N_EXP)
    rest = self.exp_mean + self.exp_std * rng.standard_normal(P.N_EXP)
    a_exp = np.clip(np.where(active, uni, rest), self.exp_low, self.exp_high)
    return a_shp, a_exp


@functools.lru_cache(maxsize=4)
def synthetic_prior(seed=0) -> Prior:
  """Prior for :func:`synthetic_model.build_synthetic_model`: unit shape
  coefficients, expressions within their natural ranges."""
  full = sm.build_synthetic_mesh(seed)['exp_full'].astype(np.float64)
  low = np.where(sm.ONE_SIDED, -0.05 * full, -0.8 * full)
  active = np.array([0.5, 0.4, 0.3, 0.15, 0.2, 0.2, 0.2, 0.15, 0.15, 0.15])
  return Prior(shp_mean=np.zeros(P.N_SHAPE), shp_std=np.ones(P.N_SHAPE),
               exp_mean=np.zeros(P.N_EXP), exp_std=0.08 * full, exp_low=low,
               exp_high=full.copy(), exp_active=active)


def gaussian_prior(stats: P.ParamStats, scale=1.0) -> Prior:
  """Prior from whitening statistics (e.g. 3DDFA's ``param_whitening.pkl`` for
  the BFM): coefficients ``N(mean, scale * std)``, expressions within +-2.5 std."""
  mean, std = np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)
  em, es = mean[P.EXP], std[P.EXP]
  return Prior(shp_mean=mean[P.SHAPE], shp_std=scale * std[P.SHAPE],
               exp_mean=em, exp_std=scale * es, exp_low=em - 2.5 * es,
               exp_high=em + 2.5 * es, exp_active=np.zeros(P.N_EXP))


# ----------------------------------------------------------------------------
# Pose and camera.


def rotation(yaw, pitch, roll):
  """Degrees -> (3, 3) rotation whose ``camera.rotation_to_angles`` is (yaw, pitch, roll).

  ``R = Rz(roll) @ Ry(-yaw) @ Rx(pitch)``, the inverse of 3DDFA's matrix2angle.
  """
  y, p, r = np.deg2rad([yaw, pitch, roll])
  cx, sx, cy, sy, cz, sz = np.cos(p), np.sin(p), np.cos(-y), np.sin(-y), np.cos(r), np.sin(r)
  rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
  return rz @ ry @ rx


@functools.lru_cache(maxsize=8)
def _pixel_affine_inv(convention, size=CROP):
  return np.linalg.inv(camera.pixel_affine_np(convention, size)[0])


@dataclasses.dataclass(frozen=True)
class Style:
  """Sampling ranges of one kind of data."""
  yaw_beta: float = 1.8        # |yaw| = 90 * Beta(1, yaw_beta) degrees
  pitch_std: float = 11.0
  roll_std: float = 8.0
  box_std: float = 3.5         # landmark box size jitter, px
  centre_std: float = 2.5      # crop centre jitter, px
  ambient: tuple = (0.35, 0.65)
  diffuse: tuple = (0.35, 0.75)
  light_tint: float = 0.0      # per-channel light colour spread
  skin_spread: float = 0.12
  blur: tuple = (0.0, 0.9)     # Gaussian sigma range, px
  noise: tuple = (0.0, 4.0)    # pixel noise std range
  jpeg: tuple = (101, 101)     # quality range; > 100 means no JPEG
  clutter: float = 0.35        # probability of a clutter background
  detector_std: tuple = (0.8, 2.5)
  outlier_p: float = 0.03


STYLES = {
    '3d': Style(),
    'heldout': Style(),
    'wild': Style(yaw_beta=3.0, pitch_std=9.0, roll_std=10.0, box_std=5.0, centre_std=4.0,
                  ambient=(0.2, 0.5), diffuse=(0.5, 1.0), light_tint=0.12, skin_spread=0.22,
                  blur=(0.3, 1.4), noise=(2.0, 8.0), jpeg=(30, 85), clutter=0.8,
                  detector_std=(1.0, 3.0), outlier_p=0.05),
}


# ----------------------------------------------------------------------------
# Backgrounds.


def _background(rng, size, clutter_p):
  """A random smooth / gradient / cluttered BGR background, uint8 (size, size, 3)."""
  kind = rng.random()
  base = rng.uniform(20, 235, 3)
  if kind < 0.4:
    g = int(rng.integers(2, 9))
    small = rng.uniform(-70, 70, (g, g, 3)) + base
    img = cv2.resize(small.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
  else:
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ang) * np.arange(size)[None, :] + np.sin(ang) * np.arange(size)[:, None]) / size
    img = base[None, None] + ramp[..., None] * rng.uniform(-90, 90, 3)[None, None]
  img = np.clip(img, 0, 255).astype(np.uint8)
  if rng.random() < clutter_p:
    for _ in range(int(rng.integers(3, 12))):
      col = tuple(float(c) for c in rng.uniform(0, 255, 3))
      x0, y0 = (int(v) for v in rng.integers(-20, size + 20, 2))
      shape = rng.integers(3)
      if shape == 0:
        w, h = (int(v) for v in rng.integers(8, 60, 2))
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), col, -1)
      elif shape == 1:
        cv2.circle(img, (x0, y0), int(rng.integers(4, 30)), col, -1, cv2.LINE_AA)
      else:
        x1, y1 = (int(v) for v in rng.integers(-20, size + 20, 2))
        cv2.line(img, (x0, y0), (x1, y1), col, int(rng.integers(1, 6)), cv2.LINE_AA)
  return img


# ----------------------------------------------------------------------------
# The source.


def _as_np(model):
  """-> mean (3N,) and the stacked basis transposed, (50, 3N), both float32 numpy."""
  basis = np.concatenate([np.asarray(model.w_shp, np.float32),
                          np.asarray(model.w_exp, np.float32)], 1)
  return np.asarray(model.u, np.float32), np.ascontiguousarray(basis.T)


@render._njit
def _lincomb(u, basis_t, coef):
  """``u + coef @ basis_t``: (M,), (K, M), (K,) -> (M,).

  A plain loop rather than BLAS: a matrix-vector product in a multi-threaded
  BLAS is ~50x slower on a loaded 2-core machine, and data workers run many
  of these side by side.
  """
  out = u.copy()
  for k in range(basis_t.shape[0]):
    c = coef[k]
    row = basis_t[k]
    for j in range(out.shape[0]):
      out[j] += c * row[j]
  return out


@render._njit
def _affine(flat, M):
  """(3N,) interleaved points, (3, 4) matrix -> (N, 3) ``M[:, :3] @ x + M[:, 3]``."""
  n = flat.shape[0] // 3
  out = np.empty((n, 3), np.float32)
  for i in range(n):
    x, y, z = flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]
    for r in range(3):
      out[i, r] = M[r, 0] * x + M[r, 1] * y + M[r, 2] * z + M[r, 3]
  return out


def _clip(v, bound):
  return min(max(float(v), -bound), bound)


class SyntheticFaces:
  """Random-access synthetic faces (a Grain ``RandomAccessDataSource``).

  Args:
    model: the :class:`MorphableModel` to render (needs ``triangles``;
      ``colors`` default to a skin tone).
    kind: ``'3d'``, ``'wild'`` or ``'heldout'``.
    size: number of examples.
    seed: dataset seed; example ``i`` depends only on ``(seed, kind, i)``.
    param_stats: whitening statistics for ``params`` (see :func:`sampling_param_stats`).
    convention: crop pixel convention of ``lms68`` / ``points18`` (``v1``, ``v2``).
    prior: coefficient :class:`Prior` (default: :func:`synthetic_prior` for
      synthetic models, :func:`gaussian_prior` of ``param_stats`` otherwise).
    label_model: model giving the 68 landmarks of the labels (default: the
      render model's own landmarks). With the real BFM, the 68-landmark basis.
  """

  def __init__(self, model: mm.MorphableModel, kind: str, size: int, seed: int,
               param_stats: P.ParamStats, convention: str = 'v1',
               prior: Optional[Prior] = None, label_model: Optional[mm.MorphableModel] = None):
    if kind not in KINDS:
      raise DaslError(f'synthetic data kind {kind!r} unknown; use one of {KINDS}')
    if model.triangles is None:
      raise DaslError(f'{model.name}: the model has no triangles, cannot render it')
    if int(size) < 1:
      raise DaslError(f'synthetic data size must be positive, got {size}')
    camera._check_convention(convention)
    self.kind, self.size, self.seed = kind, int(size), int(seed)
    self.convention, self.param_stats = convention, param_stats
    self.style = STYLES[kind]
    self.model_name = model.name
    self.u, self.basis_t = _as_np(model)
    self.triangles = np.ascontiguousarray(model.triangles, np.int32)
    n = model.n_vertices
    self.colors = (np.asarray(model.colors, np.float32) if model.colors is not None
                   else np.tile(np.array([0.86, 0.67, 0.56], np.float32), (n, 1)))
    lm = (label_model if label_model is not None else model).landmark_model()
    self.lu, self.lbasis_t = _as_np(lm)
    if prior is None:
      prior = (synthetic_prior(_model_seed(model.name)) if model.name.startswith('synthetic')
               else gaussian_prior(param_stats))
    self.prior = prior
    self._cache = None

  def __len__(self):
    return self.size

  def __repr__(self):
    return (f'SyntheticFaces(model={self.model_name!r}, kind={self.kind!r}, size={self.size}, '
            f'seed={self.seed}, convention={self.convention!r}, '
            f'stats={str(self.param_stats.source)!r})')

  def cache_name(self):
    """A file name unique to this source's contents (for :meth:`materialize`)."""
    import hashlib
    return f'synthetic_{self.kind}_{hashlib.sha1(repr(self).encode()).hexdigest()[:12]}.npz'

  # -- parameters

  def _rng(self, i, stream=None):
    stream = _STREAM[self.kind] if stream is None else stream
    return np.random.default_rng([self.seed, stream, int(i)])

  def sample_params(self, rng):
    """Draw one example's de-whitened parameters (62,) float64 and its style draws.

    The pose puts the 68-landmark box at about ``BOX_PX`` pixels, centred in
    the crop with jitter, as 3DDFA's crops do.
    """
    st = self.style
    a_shp, a_exp = self.prior.sample(rng)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    yaw = 90.0 * rng.beta(1.0, st.yaw_beta) * sign
    pitch = _clip(rng.normal(0, st.pitch_std), 40)
    roll = _clip(rng.normal(0, st.roll_std), 35)
    R = rotation(yaw, pitch, roll)
    coef = np.concatenate([a_shp, a_exp]).astype(np.float32)
    lms = _lincomb(self.lu, self.lbasis_t, coef).reshape(-1, 3) @ R.T
    lo, hi = lms[:, :2].min(0), lms[:, :2].max(0)
    box = BOX_PX + _clip(rng.normal(0, st.box_std), 3 * st.box_std)
    s = box / max(hi - lo)
    jitter = rng.normal(0, st.centre_std, 2)
    centre_px = BOX_CENTRE + np.clip(jitter, -3 * st.centre_std, 3 * st.centre_std)
    # Camera-space point that lands on the wanted (0-based) pixel.
    centre_cam = _pixel_affine_inv(RENDER_CONVENTION) @ (centre_px - camera.pixel_affine_np(RENDER_CONVENTION)[1])
    t_xy = centre_cam - s * (lo + hi) / 2
    t_z = -s * lms[:, 2].mean()  # keeps the face's depth centred; no effect on pixels
    fR = s * R
    pose = np.concatenate([fR, np.array([t_xy[0], t_xy[1], t_z])[:, None]], 1).reshape(-1)
    return np.concatenate([pose, a_shp, a_exp])

  # -- examples

  def __getitem__(self, i):
    i = int(i)
    if not 0 <= i < self.size:
      raise IndexError(f'synthetic example {i} out of range 0..{self.size - 1}')
    if self._cache is not None:
      return {k: v[i] for k, v in self._cache.items()}
    return self._generate(i)

  def _project(self, p, u, basis_t, convention):
    """(62,) params -> (N, 3) crop pixels x, y (in ``convention``) and camera depth z."""
    pose = p[P.POSE].reshape(3, 4)
    S = _lincomb(u, basis_t, p[P.N_POSE:].astype(np.float32))
    A, b = camera.pixel_affine_np(convention)
    # Pixel x, y = A @ (fR @ s + t)[:2] + b; depth z = (fR @ s + t)[2].
    M = np.concatenate([A @ pose[:2], pose[2:]], 0)
    M[:2, 3] += b
    return _affine(S, M.astype(np.float32))

  def _generate(self, i):
    st = self.style
    rng = self._rng(i)
    p = self.sample_params(rng)
    verts = self._project(p, self.u, self.basis_t, RENDER_CONVENTION)
    lms68 = self._project(p, self.lu, self.lbasis_t, self.convention)[:, :2]
    # Albedo: a skin tone (per-channel gain) and brightness.
    tone = np.clip(1 + rng.normal(0, st.skin_spread) * np.array([1.0, 1.15, 1.3])
                   + rng.normal(0, 0.04, 3), 0.3, 1.3)
    colors = self.colors * tone.astype(np.float32)
    # Light: direction in front of the face, tinted for the wild kind.
    d = rng.normal(0, 1, 3) * np.array([0.6, 0.5, 0.0]) + np.array([0, 0, 1.0])
    d /= np.linalg.norm(d)
    diffuse = rng.uniform(*st.diffuse)
    ambient = rng.uniform(*st.ambient)
    if st.light_tint:
      colors = colors * np.clip(1 + rng.normal(0, st.light_tint, 3), 0.5, 1.5).astype(np.float32)
    bg = _background(rng, CROP, st.clutter)
    img, _ = render.render(verts, self.triangles, colors, CROP, CROP, background=bg,
                           light=d * diffuse, ambient=ambient, diffuse=1.0)
    sigma = rng.uniform(*st.blur)
    if sigma > 0.3:
      img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = rng.uniform(*st.noise)
    if noise > 0.5:
      noisy = rng.standard_normal(img.shape, dtype=np.float32)
      noisy *= noise
      noisy += img
      img = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
    if st.jpeg[0] <= 100:
      q = int(rng.integers(st.jpeg[0], st.jpeg[1] + 1))
      ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, q])
      img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    # Detector-like 18 points: the exact ones plus noise and a few outliers.
    pts18 = LM.select18_np(lms68)
    pts18 = pts18 + rng.normal(0, rng.uniform(*st.detector_std), pts18.shape)
    out = rng.random(18) < st.outlier_p
    pts18[out] += rng.normal(0, 8.0, (int(out.sum()), 2))
    ex = {'image': np.ascontiguousarray(img, np.uint8),
          'points18': pts18.astype(np.float32),
          'mask18': np.ones(18, np.float32),
          'lms68': lms68.astype(np.float32)}
    if self.kind != 'wild':
      ex['params'] = np.asarray(self.param_stats.whiten(p), np.float32)
    return ex

  # -- cache

  def materialize(self, path=None, progress=True):
    """Generate every example once and serve them from memory afterwards.

    With ``path`` (an ``.npz``), load it when it exists and matches this
    source, else generate and save it there.
    """
    meta = repr(self)
    if path is not None and Path(path).exists():
      try:
        with np.load(path, allow_pickle=False) as z:
          if str(z['meta']) != meta:
            raise DaslError(f'{path}: cache holds {z["meta"]}, not {meta}; delete it')
          self._cache = {k: z[k] for k in z.files if k != 'meta'}
        return self
      except (OSError, KeyError, ValueError) as e:
        raise DaslError(f'{path}: unreadable synthetic cache ({e}); delete it') from None
    from tqdm import tqdm
    first = self._generate(0)
    arrays = {k: np.empty((self.size,) + v.shape, v.dtype) for k, v in first.items()}
    for i in tqdm(range(self.size), desc=f'synthetic {self.kind}', disable=not progress):
      ex = first if i == 0 else self._generate(i)
      for k, v in ex.items():
        arrays[k][i] = v
    self._cache = arrays
    if path is not None:
      Path(path).parent.mkdir(parents=True, exist_ok=True)
      np.savez(path, meta=np.array(meta), **arrays)
    return self


def _model_seed(name):
  """The seed of a ``synthetic(seed=S)`` model name (0 when absent)."""
  try:
    return int(name.split('seed=')[1].rstrip(')'))
  except (IndexError, ValueError):
    return 0


def sampling_param_stats(model, prior=None, n=10000, seed=0, convention='v1') -> P.ParamStats:
  """Whitening statistics of the sampling distribution (deterministic).

  Draws ``n`` parameter vectors of the ``'3d'`` kind from their own seed
  stream and returns their mean and standard deviation (floored at 1e-8 so a
  constant entry cannot divide by zero).
  """
  dummy = P.ParamStats(np.zeros(62, np.float32), np.ones(62, np.float32), 'dummy')
  src = SyntheticFaces(model, '3d', 1, seed, dummy, convention, prior=prior)
  ps = np.stack([src.sample_params(src._rng(i, _STREAM['stats'])) for i in range(n)])
  std = np.maximum(ps.std(0), 1e-8)
  return P.ParamStats(ps.mean(0).astype(np.float32), std.astype(np.float32),
                      f'sampling({model.name}, n={n}, seed={seed})')


# ----------------------------------------------------------------------------
# The real BFM as a render model.


def load_bfm_render_model(bfm_dir):
  """The real BFM for synthesis: the ``Model_PAF.pkl`` grid (40 + 10 components) as
  a mesh (``face_model.bfm.load_paf_dense``: off-surface points dropped, colours from
  the full BFM's mean texture).

  Returns:
    (render model, 68-landmark label model from ``keypoints68/``).
  """
  from dasl_jax.face_model.bfm import load_paf_dense
  bfm_dir = Path(bfm_dir)
  label = mm.load_keypoints68(bfm_dir / 'keypoints68')
  model = load_paf_dense(bfm_dir, label).replace(name=str(bfm_dir / 'Model_PAF.pkl'))
  return model, label


def synthetic_bundle_parts(kind='synthetic', sizes=(2048, 2048, 256), seed=0, convention='v1',
                           bfm_dir=None, model_seed=0, n_stats=10000, label_stats=None):
  """Everything the data pipeline needs for synthetic data.

  Args:
    kind: ``'synthetic'`` (the procedural model; needs nothing) or ``'bfm'``
      (the real BFM from ``bfm_dir``, whitened with its ``param_whitening.pkl``).
    sizes: examples in the 3D-annotated, wild and held-out sources.
    seed: dataset seed.
    label_stats: for ``'bfm'``, whitening of the labels when it is not the
      prior's ``param_whitening.pkl`` (a checkpoint fine-tuned on these faces
      must see labels in its own whitening, e.g. 3DDFA_V2's
      ``param_mean_std_62d_120x120.pkl``). The coefficients are still drawn
      around ``param_whitening.pkl``.
  Returns:
    dict with ``model`` (render model), ``label_model`` (68-landmark model for
    losses), ``param_stats``, ``prior``, and sources ``'3d'``, ``'wild'``, ``'heldout'``.
  """
  if kind == 'synthetic':
    model = sm.build_synthetic_model(model_seed)
    label_model = model.landmark_model()
    prior = synthetic_prior(model_seed)
    stats = sampling_param_stats(model, prior, n=n_stats, convention=convention)
  elif kind == 'bfm':
    if bfm_dir is None:
      raise DaslError('synthetic_bundle_parts: kind=bfm needs bfm_dir')
    model, label_model = load_bfm_render_model(bfm_dir)
    prior_stats = P.load_param_stats(Path(bfm_dir) / 'param_whitening.pkl')
    prior = gaussian_prior(prior_stats)
    stats = label_stats if label_stats is not None else prior_stats
  else:
    raise DaslError(f'synthetic model kind {kind!r} unknown; use synthetic or bfm')
  out = dict(model=model, label_model=label_model, param_stats=stats, prior=prior)
  for k, n in zip(KINDS, sizes):
    out[k] = SyntheticFaces(model, k, n, seed, stats, convention, prior=prior,
                            label_model=label_model)
  return out
