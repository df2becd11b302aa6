"""Three-cornered hat: three labellers with known independent errors are told apart."""
import numpy as np

from dasl_jax.evaluation import label_noise as LN


def test_known_errors_are_recovered(rng):
  n, k = 6000, 3
  truth = rng.uniform(20, 100, (n, k, 2))
  size = rng.uniform(60, 80, n)
  sig = {'a': 3.0, 't': 2.0, 'd': 1.5}  # per-axis sigma, % of the face size
  est = {key: truth + rng.normal(0, s / 100, (n, k, 2)) * size[:, None, None]
         for key, s in sig.items()}
  # Definitions differ by constant offsets (not noise), and 2% of the labels are wild.
  est['a'] = est['a'] + np.array([4.0, -2.0])
  wild = rng.random((n, k)) < 0.02
  est['a'][wild] += rng.normal(0, 30, (int(wild.sum()), 2))
  mask = rng.random((n, k)) > 0.1
  r = LN.three_cornered_hat(est['a'], est['t'], est['d'], mask, size)
  for key, s in sig.items():
    # RMS 2D error of an isotropic Gaussian is sqrt(2) sigma.
    np.testing.assert_allclose(r[key], np.sqrt(2) * s, rtol=0.08)
  assert (r['n'] == mask.sum(0)).all()
  by = LN.by_yaw(est['a'], est['t'], est['d'], mask, size, rng.uniform(-90, 90, n))
  assert set(by) == {'all', '0-30', '30-60', '60-90'}
  np.testing.assert_allclose(by['all']['a'], np.sqrt(2) * 3.0, rtol=0.08)
  assert sum(by[b]['crops'] for b in ('0-30', '30-60', '60-90')) == n
