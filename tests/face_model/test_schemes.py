"""Landmark schemes: points of known parameters and the offset fit, against numpy.

The references here are written from the scheme's definition
``X_k = fR @ (sum_j C[k, j] S_j + d_k) + t`` with the y-flip, in plain numpy, on
the built-in procedural face model (no assets needed).
"""
import json

import numpy as np
import pytest

from dasl_jax.errors import DaslError
from dasl_jax.face_model import schemes as S
from dasl_jax.face_model.synthetic import build_synthetic_model
from dasl_jax.geometry import landmarks as lm
from dasl_jax.geometry import mirror as MIR


@pytest.fixture(scope='module')
def model68():
  return build_synthetic_model(0).landmark_model()


def _rotation(yaw, pitch, roll):
  cy, sy, cp, sp, cr, sr = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                            np.cos(roll), np.sin(roll))
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  return rz @ rx @ ry


def _params(rng, n, model68):
  """(n, 62) faces of random pose, shape and expression, filling a 120 crop."""
  u = np.asarray(model68.u, np.float64).reshape(68, 3)
  size = np.sqrt(np.prod(u.max(0)[:2] - u.min(0)[:2]))
  col_shp = np.linalg.norm(np.asarray(model68.w_shp, np.float64), axis=0) + 1e-12
  col_exp = np.linalg.norm(np.asarray(model68.w_exp, np.float64), axis=0) + 1e-12
  out = np.zeros((n, 62))
  for i in range(n):
    R = _rotation(rng.uniform(-1.3, 1.3), rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3))
    f = rng.uniform(55, 75) / size
    t = np.array([60.0, 60.0, 0.0]) + np.r_[rng.normal(0, 3, 2), 0.0]
    out[i, :12] = np.concatenate([f * R, t[:, None]], axis=1).reshape(-1)
    # Shape and expression moving the landmarks by a few percent of the face.
    out[i, 12:52] = rng.normal(0, 1, 40) * 0.01 * size / col_shp
    out[i, 52:] = rng.normal(0, 1, 10) * 0.01 * size / col_exp
  return out


def _numpy_points(p, model68, combine, offsets):
  """The definition in numpy: v2 pixels of fR (C S + d) + t, per face."""
  u = np.asarray(model68.u, np.float64)
  ws, we = np.asarray(model68.w_shp, np.float64), np.asarray(model68.w_exp, np.float64)
  out = []
  for q in p:
    fR, t = q[:12].reshape(3, 4)[:, :3], q[:12].reshape(3, 4)[:, 3]
    shape = (u + ws @ q[12:52] + we @ q[52:]).reshape(68, 3)
    X = (fR @ (combine @ shape + offsets).T).T + t
    out.append(np.stack([X[:, 0] - 1, 120 - X[:, 1]], axis=1))
  return np.stack(out)


def _true_offsets(model68, k_scheme):
  """Symmetric offsets of a few percent of the face size for the AFLW scheme."""
  u = np.asarray(model68.u, np.float64).reshape(68, 3)
  size = np.sqrt(np.prod(u.max(0)[:2] - u.min(0)[:2]))
  rng = np.random.default_rng(3)
  d = np.zeros((k_scheme.size, 3))
  for j, m in enumerate(k_scheme.flip):
    if m > j:
      d[j] = rng.normal(0, 0.03, 3) * size
      d[m] = S.MIRROR @ d[j]
    elif m == j:
      d[j] = np.r_[0.0, rng.normal(0, 0.03, 2) * size]
  return d


def test_points_match_numpy_definition(model68, rng):
  scheme = S.aflw21()
  d = _true_offsets(model68, scheme)
  p = _params(rng, 7, model68)
  got = np.asarray(S.points2d_from_params(p, model68, scheme.with_offsets(d), 'v2'))
  want = _numpy_points(p, model68, scheme.combine, d)
  np.testing.assert_allclose(got, want, atol=2e-3)
  # The identity scheme of the 18 points is today's selection of the 68.
  l68 = _numpy_points(p, model68, np.eye(68), np.zeros((68, 3)))
  np.testing.assert_allclose(
      np.asarray(S.points2d_from_params(p, model68, S.ibug18(), 'v2')),
      np.einsum('kn,ind->ikd', lm.SEL18_MATRIX, l68), atol=2e-3)


def test_fit_recovers_known_offsets(model68, rng):
  """Labels made with known symmetric offsets (+ 0.5 px noise, 30% hidden, 3% of
  them thrown far off) give those offsets back."""
  base = S.aflw21()
  d = _true_offsets(model68, base)
  p = _params(rng, 600, model68)
  labels = _numpy_points(p, model68, base.combine, d) + rng.normal(0, 0.5, (600, 21, 2))
  mask = rng.random((600, 21)) > 0.3
  wild = rng.random((600, 21)) < 0.03
  labels[wild] += rng.normal(0, 25, (int(wild.sum()), 2))
  fitted = S.fit(base, p, labels, mask, model68, 'v2', symmetric=True, ridge=1e-6)
  u = np.asarray(model68.u, np.float64).reshape(68, 3)
  size = np.sqrt(np.prod(u.max(0)[:2] - u.min(0)[:2]))
  err = np.abs(fitted.offsets - d) / size
  assert err.max() < 0.004, err.max()   # within 0.4% of the face size
  assert fitted.fit['nme_after'] < fitted.fit['nme_before']
  # Symmetric by construction: each left point mirrors its right twin.
  for j, m in enumerate(base.flip):
    np.testing.assert_allclose(fitted.offsets[m], S.MIRROR @ fitted.offsets[j], atol=1e-6)


def test_fit_equals_plain_least_squares(model68, rng):
  """Without symmetry, robustness or ridge, one point's offset is numpy's lstsq of
  the stacked 2 x 3 pixel Jacobians against the residuals, scaled by face size."""
  base = S.aflw21()
  p = _params(rng, 80, model68)
  labels = _numpy_points(p, model68, base.combine, np.zeros((21, 3))) + rng.normal(0, 2,
                                                                                   (80, 21, 2))
  mask = np.ones((80, 21), bool)
  fitted = S.fit(base, p, labels, mask, model68, 'v2', symmetric=False, ridge=0.0, huber=0.0)
  l68 = _numpy_points(p, model68, np.eye(68), np.zeros((68, 3)))
  wh = l68.max(1) - l68.min(1)
  s = np.sqrt(wh[:, 0] * wh[:, 1])
  k = 13  # nose, left
  rows, rhs = [], []
  for i in range(80):
    fR = p[i, :12].reshape(3, 4)[:, :3]
    A = np.stack([fR[0], -fR[1]])
    rows.append(A / s[i])
    rhs.append((labels[i, k] - base.combine[k] @ l68[i]) / s[i])
  want = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]
  # float32 landmarks in the fit against float64 here: agreement to ~1e-5.
  np.testing.assert_allclose(fitted.offsets[k], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_subset_and_files(model68, tmp_path):
  s = S.aflw21(_true_offsets(model68, S.aflw21())).with_offsets(
      _true_offsets(model68, S.aflw21()), S.model_key(model68))
  s18 = s.subset(lm.SEL18_FROM_AFLW21)
  assert s18.flip == tuple(int(i) for i in MIR.FLIP18)
  np.testing.assert_array_equal(s18.offsets, s.offsets[lm.SEL18_FROM_AFLW21])
  path = tmp_path / 'scheme.json'
  s.save(path)
  back = S.load(path, model68, size=21)
  np.testing.assert_array_equal(back.offsets, s.offsets)
  with pytest.raises(DaslError, match='has 21 points, the labels 18'):
    S.load(path, model68, size=18)
  other = build_synthetic_model(1).landmark_model()
  with pytest.raises(DaslError, match='another face model'):
    S.load(path, other)
  (tmp_path / 'bad.json').write_text(json.dumps({'name': 'x'}))
  with pytest.raises(DaslError, match='bad.json: not a landmark scheme file'):
    S.load(tmp_path / 'bad.json')
