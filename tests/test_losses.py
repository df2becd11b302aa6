"""The six 2DASL losses and VDC against numpy re-derivations written here."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.models import inputs
from dasl_jax.geometry import landmarks as lm
from dasl_jax import losses
from dasl_jax.training.fake_data import random_model, random_stats

MAGIC = 0.00057339936


def _np_model(model):
  return (np.asarray(model.u, np.float64), np.asarray(model.w_shp, np.float64),
          np.asarray(model.w_exp, np.float64))


def wpdc_weights_ref(pw, tw, u, w_shp, w_exp, keypoint_vertices, mean, std):
  """3DDFA's ``WPDCLoss._calc_weights_resample`` re-derived with explicit loops."""
  rows = np.concatenate([[3 * v, 3 * v + 1, 3 * v + 2] for v in keypoint_vertices])
  ub, wsb, web = u[rows], w_shp[rows], w_exp[rows]
  inp = pw.astype(np.float64) * std + mean
  tgt = tw.astype(np.float64) * std + mean
  n = inp.shape[0]
  weights = np.zeros((n, 62))
  for b in range(n):
    verts = ub + wsb @ tgt[b, 12:52] + web @ tgt[b, 52:62]
    tmpv = verts.reshape(-1, 3).T  # (3, V): row d = coordinate d of every vertex
    tmpv_norm = np.sqrt((tmpv ** 2).sum(axis=1))
    offset_norm = math.sqrt(wsb.shape[0] // 3)
    diff = np.abs(inp[b] - tgt[b])
    for ind in range(11):
      if ind in (0, 4, 8):
        weights[b, ind] = diff[ind] * tmpv_norm[0]
      elif ind in (1, 5, 9):
        weights[b, ind] = diff[ind] * tmpv_norm[1]
      elif ind in (2, 6, 10):
        weights[b, ind] = diff[ind] * tmpv_norm[2]
      else:
        weights[b, ind] = diff[ind] * offset_norm
    w = np.concatenate([wsb, web], axis=1)
    weights[b, 12:] = MAGIC * diff[12:] * np.sqrt((w ** 2).sum(axis=0))
    weights[b, :11] += 1e-6
    weights[b, 12:] += 1e-6
    weights[b] /= weights[b].max()
    weights[b, 11] = 0
  return weights


@pytest.fixture(scope='module')
def setup():
  model = random_model(3, n_extra=300)
  stats = random_stats()
  rng = np.random.default_rng(1)
  pw = rng.normal(0, 0.5, (5, 62)).astype(np.float32)
  tw = rng.normal(0, 0.5, (5, 62)).astype(np.float32)
  return model, stats, pw, tw


def test_wpdc_landmarks_only_matches_3ddfa(setup):
  model, stats, pw, tw = setup
  u, ws, we = _np_model(model)
  want_w = wpdc_weights_ref(pw, tw, u, ws, we, np.arange(68), stats.mean, stats.std)
  got_w = np.asarray(losses.wpdc_weights(pw, tw, model, stats.mean, stats.std,
                                         jax.random.PRNGKey(0), n_resample=0))
  np.testing.assert_allclose(got_w, want_w, rtol=2e-4, atol=1e-6)
  assert np.all(got_w[:, 11] == 0) and np.allclose(got_w.max(axis=1), 1.0)
  want = np.mean(want_w * (pw.astype(np.float64) - tw) ** 2)
  got = float(losses.wpdc(pw, tw, model, stats.mean, stats.std, jax.random.PRNGKey(0),
                          n_resample=0))
  np.testing.assert_allclose(got, want, rtol=2e-4)


def test_wpdc_resamples_dense_vertices(setup):
  model, stats, pw, tw = setup
  key = jax.random.PRNGKey(7)
  rows, n_v = losses._wpdc_rows(model, key, 132)
  verts = np.asarray(rows).reshape(-1, 3)[:, 0] // 3
  assert n_v == 200 and list(verts[:68]) == list(range(68))
  assert len(set(verts[68:].tolist())) == 132  # a sample without replacement
  u, ws, we = _np_model(model)
  want_w = wpdc_weights_ref(pw, tw, u, ws, we, verts, stats.mean, stats.std)
  got_w = np.asarray(losses.wpdc_weights(pw, tw, model, stats.mean, stats.std, key, 132))
  np.testing.assert_allclose(got_w, want_w, rtol=2e-4, atol=1e-6)
  # A fresh key draws another sample.
  rows2, _ = losses._wpdc_rows(model, jax.random.PRNGKey(8), 132)
  assert not np.array_equal(np.asarray(rows2), np.asarray(rows))


def test_wpdc_no_gradient_through_weights(setup):
  model, stats, pw, tw = setup
  key = jax.random.PRNGKey(0)
  g = jax.grad(lambda p: losses.wpdc(p, tw, model, stats.mean, stats.std, key, 0))(pw)
  w = np.asarray(losses.wpdc_weights(pw, tw, model, stats.mean, stats.std, key, 0))
  want = 2 * w * (pw - tw) / pw.size  # weights are constants
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-9)


def test_vdc(setup):
  model, stats, pw, tw = setup
  u, ws, we = _np_model(model)
  p = pw.astype(np.float64) * stats.std + stats.mean
  g = tw.astype(np.float64) * stats.std + stats.mean
  p[:, 11] = g[:, 11]

  def verts(q):
    s = (u + ws @ q[12:52] + we @ q[52:]).reshape(-1, 3)
    return s @ q[:12].reshape(3, 4)[:, :3].T + q[:12].reshape(3, 4)[:, 3]

  want = np.mean([(verts(a) - verts(b)) ** 2 for a, b in zip(p, g)])
  got = float(losses.vdc(pw, tw, model, stats.mean, stats.std))
  np.testing.assert_allclose(got, want, rtol=1e-3)


def _sel18_ref(p68):
  out = []
  for s in lm.SEL18:
    out.append(p68[:, list(s)].mean(axis=1) if isinstance(s, tuple) else p68[:, s])
  return np.stack(out, axis=1)


@pytest.mark.parametrize('power', [1, 2])
def test_landmark_2d_and_cycle(power):
  rng = np.random.default_rng(2)
  p68 = rng.uniform(0, 120, (3, 68, 2)).astype(np.float32)
  det = rng.uniform(0, 120, (3, 18, 2)).astype(np.float32)
  mask = (rng.random((3, 18)) > 0.3).astype(np.float32)
  w = np.array([0.5] * 6 + [0.5, 1, 0.5, 0.5, 1, 0.5, 0.5, 2, 0.5, 1, 2, 1]) ** power
  d2 = ((_sel18_ref(p68.astype(np.float64)) - det) ** 2).sum(-1)
  want = (mask * w * d2).sum() / (2 * mask.sum())
  for fn in (losses.landmark_2d_consistency, losses.cycle_consistency):
    np.testing.assert_allclose(float(fn(p68, det, mask, power)), want, rtol=1e-5)
  if power == 2:
    # All visible: PyTorch's mse_loss(w * pred, w * target) of the released code.
    w1 = np.sqrt(w)[None, :, None]  # the unsquared SEL18 weights
    mse = np.mean((w1 * _sel18_ref(p68.astype(np.float64)) - w1 * det) ** 2)
    np.testing.assert_allclose(
        float(losses.landmark_2d_consistency(p68, det, np.ones_like(mask), 2)), mse, rtol=1e-5)


def test_landmark_3d_consistency():
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(2, 4, 68, 3))
  np.testing.assert_allclose(float(losses.landmark_3d_consistency(a, b)),
                             ((a - b) ** 2).sum() / (4 * 68 * 3), rtol=1e-5)


def test_gan_losses():
  rng = np.random.default_rng(4)
  real, fake = rng.normal(0, 3, (2, 6))
  sig = lambda x: 1 / (1 + np.exp(-x))
  want_c = -np.mean(np.log(sig(real))) - np.mean(np.log(1 - sig(fake)))
  np.testing.assert_allclose(float(losses.critic_loss(real, fake)), want_c, rtol=1e-5)
  np.testing.assert_allclose(float(losses.self_critic_generator(fake)),
                             -np.mean(np.log(sig(fake))), rtol=1e-5)


def test_no_gradient_through_flm_rebuild(setup):
  """The second pass's input depends on the first prediction only through integer pixels."""
  model, stats, pw, _ = setup
  model68 = model.landmark_model()
  image = jnp.full((5, 120, 120, 3), 100.0)

  def second_input(p):
    _, l2 = losses.landmarks_from_whitened(p, model68, stats.mean, stats.std, 'v1')
    y18 = jax.lax.stop_gradient(lm.select18(l2))
    return jnp.sum(inputs.model_input(image, y18, None, 4) * jnp.arange(4.0))

  g = jax.grad(second_input)(jnp.asarray(pw))
  assert np.all(np.asarray(g) == 0)
  # Even without the explicit stop_gradient, flm itself passes no gradient.
  g2 = jax.grad(lambda pts: jnp.sum(lm.flm(pts)))(jnp.full((2, 18, 2), 30.5))
  assert np.all(np.asarray(g2) == 0)
