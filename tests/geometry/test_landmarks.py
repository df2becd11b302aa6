"""Landmark schemes and the FLM, against selections written out by hand.

References: METHOD.md section 3 (the 18 points and weights), the assets README
(3DDFA's 1-based 68 -> AFLW-21 mapping and AFLW's 21-point order), METHOD.md
section 2 (the FLM: -1 everywhere, +1 at the clamped integer pixel).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.geometry import landmarks as L
from tests.helpers.flm_reference import flm_ref


def _sel18_np(p):
  """METHOD.md section 3 written out: (68, D) -> (18, D), 0-based indices."""
  mid = lambda a, b: (p[a] + p[b]) / 2
  return np.stack([p[17], p[19], p[21], p[22], p[24], p[26],
                   p[36], mid(37, 40), p[39], p[42], mid(43, 46), p[45],
                   p[31], p[30], p[35],
                   p[48], mid(62, 66), p[54]])


# 2.0 nose tip and mouth centre; 1.0 eye centres and mouth corners; 0.5 the rest.
WEIGHTS18 = np.array([.5, .5, .5, .5, .5, .5,
                      .5, 1., .5, .5, 1., .5,
                      .5, 2., .5,
                      1., 2., 1.])

# The assets README's 1-based list; a tuple (a, b) means mean(a..b) inclusive.
AFLW21_1BASED = [18, 20, 22, 23, 25, 27, 37, (37, 42), 40, 43, (43, 48), 46,
                 3, 32, 31, 36, 15, 49, (61, 68), 55, 9]


def _aflw21_np(p):
  out = []
  for s in AFLW21_1BASED:
    if isinstance(s, tuple):
      out.append(p[s[0] - 1:s[1]].mean(0))  # 1-based inclusive -> 0-based slice
    else:
      out.append(p[s - 1])
  return np.stack(out)


def test_select18_and_weights_by_hand(rng):
  p = rng.normal(size=(68, 2)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(L.select18(p)), _sel18_np(p), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(L.select18_np(p), _sel18_np(p), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(L.SEL18_WEIGHTS, WEIGHTS18)
  assert (WEIGHTS18 == 0.5).sum() == 12
  # Batched, 3D points.
  p3 = rng.normal(size=(2, 3, 68, 3)).astype(np.float32)
  got = np.asarray(L.select18(p3))
  assert got.shape == (2, 3, 18, 3)
  np.testing.assert_allclose(got[1, 2], _sel18_np(p3[1, 2]), rtol=1e-6, atol=1e-6)


def test_aflw21_from_68_matches_readme_list(rng):
  p = rng.normal(size=(4, 68, 2)).astype(np.float32)
  got = np.asarray(L.aflw21_from_68(p))
  assert got.shape == (4, 21, 2)
  for b in range(4):
    np.testing.assert_allclose(got[b], _aflw21_np(p[b]), rtol=1e-5, atol=1e-6)


def test_sel18_from_aflw21_drops_ears_and_chin(rng):
  # AFLW order: 6 brows, 3 + 3 eyes, left ear (12), nose 3, right ear (16), mouth 3, chin (20).
  p21 = rng.normal(size=(2, 21, 2)).astype(np.float32)
  vis = (rng.uniform(size=(2, 21)) > 0.3).astype(np.float32)
  keep = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19]
  out, m = L.sel18_from_aflw21(p21, vis)
  np.testing.assert_array_equal(np.asarray(out), p21[:, keep])
  np.testing.assert_array_equal(np.asarray(m), vis[:, keep])
  np.testing.assert_array_equal(np.asarray(L.sel18_from_aflw21(p21)), p21[:, keep])


def test_sel18_points_are_the_aflw_points_where_schemes_agree(rng):
  # Corners, brows, nose and mouth corners are single 68 points in both schemes;
  # eye and mouth centres are defined differently (mid of 2 vs mean of 6/8).
  p = rng.normal(size=(68, 2)).astype(np.float32)
  via21 = np.asarray(L.sel18_from_aflw21(L.aflw21_from_68(p)))
  direct = _sel18_np(p)
  same = [k for k in range(18) if k not in (7, 10, 16)]
  np.testing.assert_allclose(via21[same], direct[same], rtol=1e-6, atol=1e-6)


def _flm_points(rng, k=18):
  pts = rng.uniform(-20, 140, size=(k, 2)).astype(np.float32)
  pts[0] = [0.0, 0.0]
  pts[1] = [119.99, 119.99]
  pts[2] = [-0.5, 60.7]     # clamps to column 0
  pts[3] = [130.0, -4.0]    # clamps to (row 0, column 119)
  pts[4] = [33.9, 71.2]     # row 71, column 33
  return pts


def test_flm_matches_reference_loop(rng):
  pts = _flm_points(rng)
  mask = (rng.uniform(size=18) > 0.3).astype(np.float32)
  mask[4] = 1
  for m in (None, mask):
    want = flm_ref(pts, m)
    np.testing.assert_array_equal(L.flm_np(pts, m), want)
    np.testing.assert_array_equal(np.asarray(L.flm(pts, m)), want)
  full = flm_ref(pts)
  assert full[71, 33] == 1 and full[0, 119] == 1 and full[60, 0] == 1 and full[119, 119] == 1
  assert set(np.unique(full)) == {-1.0, 1.0}


def test_flm_masked_point_not_drawn_and_batched(rng):
  pts = np.stack([_flm_points(rng) for _ in range(3)])
  mask = np.ones((3, 18), np.float32)
  mask[1, 4] = 0
  got = np.asarray(L.flm(pts, mask))
  assert got.shape == (3, 120, 120) and got.dtype == np.float32
  for b in range(3):
    np.testing.assert_array_equal(got[b], flm_ref(pts[b], mask[b]))
  assert got[1, 71, 33] == -1 or any(  # another point may share the pixel
      int(np.floor(y)) == 71 and int(np.floor(x)) == 33 for k, (x, y) in enumerate(pts[1]) if k != 4)


def test_flm_non_finite_points_not_drawn_in_both_twins(rng):
  pts = _flm_points(rng)
  pts[5] = [np.nan, 10.0]
  pts[6] = [np.inf, np.inf]
  want = flm_ref(pts)
  np.testing.assert_array_equal(L.flm_np(pts), want)
  np.testing.assert_array_equal(np.asarray(L.flm(pts)), want)


def test_flm_other_size():
  pts = np.array([[3.2, 7.9], [100.0, 100.0]], np.float32)
  want = flm_ref(pts, size=64)
  np.testing.assert_array_equal(L.flm_np(pts, size=64), want)
  np.testing.assert_array_equal(np.asarray(L.flm(pts, size=64)), want)


def test_jit_vmap_and_gradients(rng):
  pts_np = np.stack([_flm_points(rng) for _ in range(2)])
  mask_np = np.ones((2, 18), np.float32)
  mask_np[1, :3] = 0
  want = np.stack([flm_ref(p, m) for p, m in zip(pts_np, mask_np)])
  pts, mask = jnp.asarray(pts_np), jnp.asarray(mask_np)
  np.testing.assert_array_equal(np.asarray(jax.jit(L.flm)(pts, mask)), want)
  np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(L.flm))(pts, mask)), want)
  g = jax.jit(jax.grad(lambda q: jnp.sum(L.flm(q) * 3.0)))(pts)
  np.testing.assert_array_equal(np.asarray(g), 0)
  p68_np = rng.normal(size=(2, 68, 2)).astype(np.float32)
  p68 = jnp.asarray(p68_np)
  np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(L.select18))(p68)),
                             np.stack([_sel18_np(q) for q in p68_np]), rtol=1e-6, atol=1e-6)
  # d/dp of sum(w * select18(p)): each 68 point gets the weights of the 18 using it.
  g = np.asarray(jax.jit(jax.grad(lambda q: jnp.sum(L.select18(q)[..., 0] * WEIGHTS18)))(p68[0]))
  want = np.zeros(68)
  for k, s in enumerate([17, 19, 21, 22, 24, 26, 36, (37, 40), 39, 42, (43, 46), 45,
                         31, 30, 35, 48, (62, 66), 54]):
    for i in (s if isinstance(s, tuple) else (s,)):
      want[i] += WEIGHTS18[k] / (2 if isinstance(s, tuple) else 1)
  np.testing.assert_allclose(g[:, 0], want, rtol=1e-6)
  np.testing.assert_array_equal(g[:, 1], 0)
  np.testing.assert_allclose(np.asarray(jax.jit(L.aflw21_from_68)(p68)),
                             np.stack([_aflw21_np(q) for q in p68_np]), rtol=1e-5, atol=1e-6)
