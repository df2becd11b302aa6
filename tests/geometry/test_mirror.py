"""The mirror of a face against independent numpy reasoning: the permutations pair
left and right, a mirrored face's landmarks are the mirrored landmarks, and the
re-fit is the ridge least squares it claims to be."""
import numpy as np
import pytest

from tests.mirror_reference import (PAIRS18, PAIRS68, case, mirrored_landmarks_np,
                                    mirrored_points18_np, perm_from_pairs, ridge_mirror_np)
from dasl_jax.data import readers as R
from dasl_jax.geometry import mirror as MIR

def test_flips_are_the_written_out_pairings():
  np.testing.assert_array_equal(MIR.FLIP68, perm_from_pairs(PAIRS68, 68))
  np.testing.assert_array_equal(MIR.FLIP18, perm_from_pairs(PAIRS18, 18))


def test_mirror_permutations_are_involutions():
  for perm, n in ((MIR.FLIP68, 68), (MIR.FLIP18, 18)):
    assert sorted(perm) == list(range(n))
    np.testing.assert_array_equal(perm[perm], np.arange(n))


@pytest.fixture(scope='module')
def synthetic_model():
  from dasl_jax.face_model.synthetic import build_synthetic_model
  return build_synthetic_model(0)


def test_flip68_matches_a_symmetric_face(synthetic_model):
  """The synthetic face is built nearly left/right symmetric: mirroring x and
  re-indexing with FLIP68 must land near the same points (a wrong pairing
  would be off by tens of percent of the face width)."""
  m = R.LandmarkModelNP(synthetic_model)
  S = m.shape(np.zeros(50))
  mirrored = S[MIR.FLIP68] * np.array([-1, 1, 1])
  width = S[:, 0].max() - S[:, 0].min()
  err = np.linalg.norm(mirrored - S, axis=-1)
  assert err.max() < 0.05 * width and err.mean() < 0.01 * width


def test_flip18_consistent_with_flip68(synthetic_model):
  """Selecting the 18 of a mirrored 68 = mirroring the selected 18 (eye centres are
  means of other lid points, so they agree only approximately: tested on a face)."""
  m = R.LandmarkModelNP(synthetic_model)
  p68 = m.shape(np.zeros(50))[:, :2] * 4e-4 + 60
  a = R.points18(MIR.mirror_points(p68))[0]
  b = MIR.mirror_points(R.points18(p68)[0])
  np.testing.assert_allclose(a, b, atol=0.5)


def test_mirror_points_and_mask(rng):
  pts = rng.uniform(0, 119, (3, 18, 2)).astype(np.float32)
  got = MIR.mirror_points(pts)
  np.testing.assert_allclose(got, mirrored_points18_np(pts), atol=1e-5)
  np.testing.assert_allclose(MIR.mirror_points(got), pts, atol=1e-5)
  mask = (rng.random((3, 18)) > 0.5).astype(np.float32)
  np.testing.assert_array_equal(MIR.mirror_mask(mask), mask[:, perm_from_pairs(PAIRS18, 18)])
  with pytest.raises(ValueError, match='68 or 18'):
    MIR.mirror_points(pts[:, :5])


def test_mirror_params_is_the_ridge_fit():
  model, stats, ps, conv, _ = case()
  fit = MIR.mirror_fit(model, conv, stats)
  got = MIR.mirror_params(ps, fit)
  want = np.stack([ridge_mirror_np(p, model, stats, conv) for p in ps])
  scale = np.abs(want).max(0) + 1e-12
  np.testing.assert_allclose(got / scale, want / scale, atol=1e-6)


def test_mirrored_params_give_the_mirrored_landmarks():
  """The landmarks of the mirrored parameters against the landmarks mirrored in
  pixel space (the BFM is not exactly symmetric: a fit, within a pixel)."""
  model, stats, ps, conv, real = case()
  m = R.LandmarkModelNP(model)
  got = R.lms68_from_params(m, MIR.mirror_params(ps, MIR.mirror_fit(model, conv, stats)), conv)
  want = mirrored_landmarks_np(R.lms68_from_params(m, ps, conv))
  err = np.linalg.norm(got - want, axis=-1)
  assert err.mean() < (0.3 if real else 0.8) and err.max() < (1.5 if real else 2.0), \
      (err.mean(), err.max())


def test_mirror_twice_returns_near_the_start():
  model, stats, ps, conv, real = case()
  fit = MIR.mirror_fit(model, conv, stats)
  m = R.LandmarkModelNP(model)
  back = MIR.mirror_params(MIR.mirror_params(ps, fit), fit)
  rot = [0, 1, 2, 4, 5, 6, 8, 9, 10]  # F F fR F F = fR exactly; t moves with the fit's shift
  np.testing.assert_allclose(back[:, rot], ps[:, rot], rtol=1e-12, atol=1e-15)
  err = np.linalg.norm(R.lms68_from_params(m, back, conv) - R.lms68_from_params(m, ps, conv),
                       axis=-1)
  assert err.mean() < (0.3 if real else 1.0), err.mean()


def test_mirror_params_numpy_and_jax_agree():
  import jax.numpy as jnp
  model, stats, ps, conv, _ = case()
  fit = MIR.mirror_fit(model, conv, stats)
  want = MIR.mirror_params(ps, fit)
  got = np.asarray(MIR.mirror_params(jnp.asarray(ps, jnp.float32),
                                     fit.astype(np.float32)))
  scale = np.abs(want).max(0) + 1e-12
  np.testing.assert_allclose(got / scale, want / scale, atol=2e-5)
