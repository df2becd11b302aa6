"""Flip test-time averaging in the prediction core, against an independent numpy
re-derivation: the network run by hand on the crop and on its mirror (FLM points
mirrored and re-ordered by the written-out pairs), the mirror's parameters mapped
back by a per-face ridge least-squares fit, averaged; and a face with known
parameters, shown mirrored, comes back."""
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from tests.mirror_reference import (PAIRS18, case, mirrored_points18_np, perm_from_pairs,
                                    ridge_mirror_np)
from dasl_jax.data import readers as R
from dasl_jax.errors import DaslError
from dasl_jax.geometry import camera, landmarks
from dasl_jax.inference import core


class Probe(nn.Module):
  """A stand-in regressor: whitened parameters from the input's mean and its
  first moments along x and y (so a crop and its mirror give different outputs;
  with 4 channels the FLM's points move them too)."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    cols = jnp.linspace(-1.0, 1.0, x.shape[2])[None, None, :, None]
    rows = jnp.linspace(-1.0, 1.0, x.shape[1])[None, :, None, None]
    f = jnp.concatenate([x.mean((1, 2)), (x * cols).mean((1, 2)) * 8,
                         (x * rows).mean((1, 2)) * 8], -1)
    w = self.param('w', nn.initializers.normal(1.0), (f.shape[-1], 62))
    return 0.5 * jnp.tanh(f @ w)


@pytest.fixture(scope='module')
def setup():
  model, stats, _, conv, _ = case()
  lm = model.landmark_model()
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (5, 120, 120, 3), dtype=np.uint8)
  crops[:, :, :40] //= 3  # a darker left third: the mirror differs
  pts = rng.uniform(15, 105, (5, 18, 2)).astype(np.float32)
  mask = (rng.random((5, 18)) > 0.3).astype(np.float32)
  return model, lm, stats, conv, crops, pts, mask


def _probe_np(variables, crops, pts=None, mask=None):
  """:class:`Probe` in numpy (whitened (N, 62)); the FLM by ``landmarks.flm_np``."""
  x = (np.asarray(crops, np.float64) - 127.5) / 128.0
  if pts is not None:
    flm = np.stack([landmarks.flm_np(p, None if mask is None else k)
                    for p, k in zip(pts, mask if mask is not None else [None] * len(pts))])
    x = np.concatenate([x, flm[..., None]], -1)
  cols = np.linspace(-1.0, 1.0, x.shape[2])[None, None, :, None]
  rows = np.linspace(-1.0, 1.0, x.shape[1])[None, :, None, None]
  f = np.concatenate([x.mean((1, 2)), (x * cols).mean((1, 2)) * 8,
                      (x * rows).mean((1, 2)) * 8], -1)
  return 0.5 * np.tanh(f @ np.asarray(variables['params']['w'], np.float64))


def _reference(variables, model, stats, conv, crops, pts=None, mask=None):
  """(N, 62) de-whitened: the mean of the direct prediction and the mirrored
  crop's prediction mapped back, all by hand in numpy; and the direct prediction."""
  direct = stats.dewhiten(_probe_np(variables, crops, pts, mask))
  flipped = stats.dewhiten(_probe_np(
      variables, crops[:, :, ::-1], None if pts is None else mirrored_points18_np(pts),
      None if mask is None else mask[:, perm_from_pairs(PAIRS18, 18)]))
  back = np.stack([ridge_mirror_np(q, model, stats, conv) for q in flipped])
  return 0.5 * (direct + back), direct


@pytest.mark.parametrize('in_channels', [3, 4])
def test_flip_tta_matches_the_numpy_reference(setup, in_channels):
  """3 channels through ``Predictor(tta='flip')``, 4 channels (given FLM points,
  some not drawn) through the core's jitted function."""
  from dasl_jax.inference.predictor import Predictor
  from dasl_jax.models import ModelConfig
  model, lm, stats, conv, crops, pts, mask = setup
  module = Probe()
  w = np.random.default_rng(in_channels).normal(0, 0.3, (3 * in_channels, 62))
  variables = {'params': {'w': jnp.asarray(w, jnp.float32)}}
  if in_channels == 3:
    pts = mask = None
    cfg = ModelConfig(arch='mobilenet', in_channels=3, convention=conv)
    out = Predictor.from_parts(module, variables, cfg, stats, model, tta='flip',
                               batch_size=8).predict_crops(crops)
  else:
    fn = core.make_forward(module, 4, conv, 0, core.mirror_fit('flip', stats, lm, conv))
    out = core.predict_crops(fn, variables, stats, lm, crops, len(crops), pts, mask,
                             batch_size=8)
  want, direct = _reference(variables, model, stats, conv, crops, pts, mask)
  scale = np.abs(want).max(0) + 1e-12
  np.testing.assert_allclose(out['params'] / scale, want / scale, atol=1e-4)
  # Landmarks and pose come from the averaged parameters.
  m = R.LandmarkModelNP(model)
  np.testing.assert_allclose(out['lms68'], R.lms68_from_params(m, want, conv), atol=2e-3)
  np.testing.assert_allclose(out['whitened'], stats.whiten(out['params']), atol=1e-4)
  fR = jnp.asarray(want[:, :12].reshape(-1, 3, 4)[:, :, :3], jnp.float32)
  np.testing.assert_allclose(out['pose'], np.asarray(camera.pose_angles(fR)), atol=1e-2)
  # ... and differ from the direct prediction's.
  assert np.abs(R.lms68_from_params(m, direct, conv) - out['lms68']).mean() > 0.5


class Shown(nn.Module):
  """A perfect regressor of known faces: crop i (its darker half at the value
  10 * (i + 1)) is answered with ``faces[i]`` (whitened) when the dark half is on
  the left, ``mirrored[i]`` when it is on the right (the mirror image)."""
  faces: tuple
  mirrored: tuple

  @nn.compact
  def __call__(self, x, train=False):
    del train
    raw = x * 128.0 + 127.5
    left, right = raw[:, :, :60].mean((1, 2, 3)), raw[:, :, 60:].mean((1, 2, 3))
    i = jnp.round(jnp.minimum(left, right) / 10.0).astype(jnp.int32) - 1
    return jnp.where((left < right)[:, None], jnp.asarray(self.faces)[i],
                     jnp.asarray(self.mirrored)[i])


def test_a_known_face_seen_mirrored_comes_back(setup):
  """The mirror image of a face with known parameters has the mirrored landmarks
  (re-fitted by the numpy reference); averaging maps it back onto the face."""
  model, lm, stats, conv, _, _, _ = setup
  _, _, ps, _, real = case()
  ps = ps[:6]
  mirrored = np.stack([ridge_mirror_np(p, model, stats, conv) for p in ps])
  module = Shown(tuple(map(tuple, stats.whiten(ps).astype(np.float32))),
                 tuple(map(tuple, stats.whiten(mirrored).astype(np.float32))))
  crops = np.full((len(ps), 120, 120, 3), 200, np.uint8)
  crops[:, :, :60] = (10 * np.arange(1, len(ps) + 1))[:, None, None, None]
  fn = core.make_forward(module, 3, conv, 0, core.mirror_fit('flip', stats, lm, conv))
  out = core.predict_crops(fn, {}, stats, lm, crops, len(ps), batch_size=8)
  m = R.LandmarkModelNP(model)
  err = np.linalg.norm(out['lms68'] - R.lms68_from_params(m, ps, conv), axis=-1)
  assert err.mean() < (0.3 if real else 1.0), err.mean(axis=1)
  # The mirrored faces' own landmarks are far from the faces (a real test).
  assert np.linalg.norm(R.lms68_from_params(m, mirrored, conv)
                        - R.lms68_from_params(m, ps, conv), axis=-1).mean() > 3


def test_predictor_refuses_an_unknown_tta(setup):
  from dasl_jax.inference.predictor import Predictor
  from dasl_jax.models import ModelConfig
  model, _, stats, conv, _, _, _ = setup
  cfg = ModelConfig(arch='mobilenet', in_channels=3, convention=conv)
  with pytest.raises(DaslError, match='--tta must be one of none, flip'):
    Predictor.from_parts(Probe(), {}, cfg, stats, model, tta='mirror')


def test_commands_refuse_tta_where_it_cannot_run(tmp_path):
  """``evaluate --tta flip --predictions`` and ``predict --backend onnxruntime --tta
  flip``: one line each, before any model loads."""
  from dasl_jax import inference
  from dasl_jax.evaluation import request
  with pytest.raises(DaslError, match='--tta flip goes with --checkpoint'):
    request.run(request.Request(predictions=str(tmp_path / 'p.npy'), tta='flip'))
  with pytest.raises(DaslError, match='--tta must be one of none, flip'):
    request.run(request.Request(checkpoint=str(tmp_path / 'no_model'), tta='both'))
  with pytest.raises(DaslError, match='--tta flip: only with --backend jax'):
    inference.Runner(str(tmp_path / 'no_model'), tmp_path / 'out',
                     boxes=str(tmp_path / 'boxes.json'), backend='onnxruntime', tta='flip')
