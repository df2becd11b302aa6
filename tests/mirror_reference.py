"""Independent numpy references for the mirror of a face (tests of
``geometry.mirror`` and of the prediction core's flip test-time averaging).

Written from the geometry, not from ``geometry.mirror``: the left/right pairs
spelled out by region, the pixel mirror ``x -> size - 1 - x``, and the shape
re-fit as a per-face ridge least-squares problem solved with ``np.linalg.lstsq``.
"""
import numpy as np

from tests.conftest import asset_path
from dasl_jax.data import readers as R
from dasl_jax.face_model import morphable_model as MM
from dasl_jax.geometry import params as P

RIDGE = 1e6  # the ridge geometry.mirror documents (whitened coefficients, BFM units)

# iBUG-68 left/right pairs, written out by region (0-based): jaw, brows, nose
# bottom, eyes (corners, lids), outer lips, inner lips. Points on the centre
# line (nose bridge 27-30, 33, 51, 57, 62, 66, chin 8) map to themselves.
PAIRS68 = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] +
           [(31, 35), (32, 34)] + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)] +
           [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56)] + [(60, 64), (61, 63), (67, 65)])


def perm_from_pairs(pairs, n):
  perm = np.arange(n)
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return perm


# The 18 points (landmarks.SEL18 order): brows 17-21 <-> 26-22, eye corner 36 <->
# 45, lid centre (37+40)/2 <-> (43+46)/2, corner 39 <-> 42, nostrils 31 <-> 35,
# mouth corners 48 <-> 54; the nose tip and the mouth centre map to themselves.
PAIRS18 = [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17)]


def mirrored_points18_np(points18, size=120):
  """Independent: (N, 18, 2) FLM points of the mirror image."""
  out = np.array(points18, np.float64)[:, perm_from_pairs(PAIRS18, 18)]
  out[..., 0] = size - 1 - out[..., 0]
  return out


def case():
  """Real BFM landmarks and real fits when present, else the synthetic model."""
  kp = asset_path('bfm', 'keypoints68')
  if kp.exists():
    model = MM.load_keypoints68(kp)
    stats = P.load_param_stats(asset_path('bfm', 'param_whitening.pkl'))
    ps = np.load(asset_path('pretrained', 'mb05_reference_params62.npy'))[:40].astype(np.float64)
    return model, stats, ps, 'v2', True
  from dasl_jax.face_model.synthetic import build_synthetic_model
  model = build_synthetic_model(0)
  rng = np.random.default_rng(0)
  ps = np.zeros((20, 62))
  for i in range(20):
    a = np.deg2rad(rng.uniform(-40, 40))
    R3 = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    ps[i, :12] = np.concatenate([4e-4 * R3, [[60], [62], [0]]], 1).reshape(-1)
    ps[i, 12:] = rng.normal(0, 0.5, 50)
  stats = P.ParamStats(ps.mean(0), np.maximum(ps.std(0), 1e-4), 'these faces')
  return model, stats, ps, 'v1', False


def mirrored_landmarks_np(lms68, size=120):
  """Independent: the landmarks of the mirror image, (N, 68, 2) crop pixels ->
  (N, 68, 2): x -> size - 1 - x (pixel centres at integer columns), left/right
  re-indexed by the written-out pairs."""
  perm = perm_from_pairs(PAIRS68, 68)
  out = np.array(lms68, np.float64)[:, perm]
  out[..., 0] = size - 1 - out[..., 0]
  return out


def ridge_mirror_np(p, model, stats, convention, ridge=RIDGE, size=120):
  """Independent re-derivation of the parameter mirror for one face, (62,) -> (62,).

  Rotation: a mirror image is the face seen through x -> -x in camera space, so
  fR' = F fR F. Shape: the object points mirrored (x negated) and re-indexed,
  fitted per face by ``np.linalg.lstsq`` on the ridge-augmented system
  ``[W, I3; sqrt(ridge) diag(1/std), 0] [alpha; delta] = [target - u; 0]``.
  Translation: chosen so that the projected x, y of the fitted shape's centroid
  is the mirror of the original's (pixel mirror of the projected centroid), z
  following the same rule as x, y (t_z + (fR' delta)_z).
  """
  m = R.LandmarkModelNP(model)
  fR, t, a_shp, a_exp = P.split(p)
  F = np.diag([-1.0, 1.0, 1.0])
  S = m.shape(np.concatenate([a_shp, a_exp]))
  target = (S * np.array([-1, 1, 1]))[perm_from_pairs(PAIRS68, 68)]
  n = m.w.shape[1]
  design = np.concatenate([m.w, np.tile(np.eye(3), (68, 1))], 1)
  reg = np.concatenate([np.sqrt(ridge) * np.diag(1.0 / np.asarray(stats.std, np.float64)[12:]),
                        np.zeros((n, 3))], 1)
  sol = np.linalg.lstsq(np.concatenate([design, reg]),
                        np.concatenate([target.reshape(-1) - m.u, np.zeros(n)]), rcond=None)[0]
  alpha, delta = sol[:n], sol[n:]
  fR2 = F @ fR @ F
  # Projected centroid (pixels) of the original, mirrored: cx -> size - 1 - cx.
  c_orig = R.lms68_from_params(m, p, convention).astype(np.float64).mean(0)
  want = np.array([size - 1 - c_orig[0], c_orig[1]])
  # The fitted face with t = 0 (its object shift delta ends up in t).
  p0 = np.concatenate([np.concatenate([fR2, np.zeros((3, 1))], 1).reshape(-1), alpha])
  got = R.lms68_from_params(m, p0, convention).astype(np.float64).mean(0)
  # Both conventions flip y: pixels = (x, -y) + b, so t_xy = (dx, -dy).
  d = want - got
  t2 = np.array([d[0], -d[1], t[2] + (fR2 @ delta)[2]])
  return np.concatenate([np.concatenate([fR2, t2[:, None]], 1).reshape(-1), alpha])
