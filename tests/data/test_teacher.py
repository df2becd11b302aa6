"""The teacher-labelled 3D side, the validation split, FLM jitter, EMA and the critic's negatives."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.io import checkpoint
from dasl_jax.geometry import landmarks as LM
from dasl_jax.geometry import params as P
from dasl_jax.data import augment as AUG
from dasl_jax.data import readers as R
from dasl_jax.data import teacher as T
from dasl_jax.errors import DaslError
from dasl_jax.models import ModelConfig, create_regressor
from dasl_jax.training.fake_data import FakeData
from tests.helpers.random_models import random_variables
from tests.helpers.tiny_training import build, tiny_config


def test_validation_split_is_fixed_disjoint_and_seeded():
  names = [f'n{i:04d}.jpg' for i in range(500)]
  tr, va = T.validation_split(names, 100, seed=0)
  assert len(va) == 100 and len(tr) == 400 and not set(tr) & set(va)
  assert set(tr) | set(va) == set(names)
  assert T.validation_split(names, 100, seed=0) == (tr, va)   # same on every run
  assert T.validation_split(names, 100, seed=1)[1] != va
  assert tr == [n for n in names if n not in set(va)]          # list order kept
  with pytest.raises(DaslError, match='val_size'):
    T.validation_split(names, 500)


def _write_crops(folder, n, seed=0):
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  names = []
  for i in range(n):
    img = rng.integers(0, 255, (120, 120, 3), np.uint8)
    cv2.imwrite(str(folder / f'c{i}.png'), img)
    names.append(f'c{i}.png')
  return names


def _teacher_dir(tmp_path, in_channels=3):
  """A random MobileNet x0.25 work directory (the teacher) and its parts."""
  cfg = ModelConfig.from_dict(dict(arch='mobilenet', width=0.25, in_channels=in_channels,
                                   num_params=62, convention='v2'), 'test')
  module = create_regressor(cfg)
  v = random_variables(cfg)  # no initialiser compile (AVX2: ~20 s)
  fake = FakeData(0, 1, 1).param_stats
  stats = P.ParamStats(mean=np.asarray(fake.mean, np.float32),
                       std=np.asarray(fake.std, np.float32), source='test')
  checkpoint.save_model(tmp_path / 'teacher', cfg, v, stats)
  return tmp_path / 'teacher', module, v, stats


def test_teacher_params_match_a_direct_forward_and_cache(tmp_path, monkeypatch):
  d, module, v, stats = _teacher_dir(tmp_path)
  names = _write_crops(tmp_path / 'crops', 5)
  model = FakeData(0, 1, 1).model
  p = T.teacher_params(d, tmp_path / 'crops', names, model, mirror=False,
                       cache_dir=tmp_path / 'cache', batch_size=4)
  # Independent path: read the files with OpenCV, normalise, apply the module.
  imgs = np.stack([cv2.imread(str(tmp_path / 'crops' / n)) for n in names]).astype(np.float32)
  w = np.asarray(jax.jit(module.apply)(v, jnp.asarray((imgs - 127.5) / 128.0)))
  np.testing.assert_allclose(p, w * stats.std + stats.mean, rtol=1e-4, atol=1e-4)
  # The second call reads the cache (no model run) and gives the same labels.
  from dasl_jax import inference
  monkeypatch.setattr(inference, 'Predictor', None)
  np.testing.assert_array_equal(
      T.teacher_params(d, tmp_path / 'crops', names, model, mirror=False,
                       cache_dir=tmp_path / 'cache'), p)


def test_teacher_mirror_averages_the_flipped_prediction(tmp_path):
  d, module, v, stats = _teacher_dir(tmp_path)
  names = _write_crops(tmp_path / 'crops', 3, seed=1)
  model = FakeData(0, 1, 1).model
  p0 = T.teacher_params(d, tmp_path / 'crops', names, model, mirror=False)
  pm = T.teacher_params(d, tmp_path / 'crops', names, model, mirror=True)
  imgs = np.stack([cv2.imread(str(tmp_path / 'crops' / n)) for n in names])
  flipped = np.ascontiguousarray(imgs[:, :, ::-1]).astype(np.float32)
  wf = np.asarray(jax.jit(module.apply)(v, jnp.asarray((flipped - 127.5) / 128.0)))
  pf = wf * stats.std + stats.mean
  warper = AUG.ParamWarper(model, 'v2', stats)
  back = warper.mirror(pf.astype(np.float64))
  np.testing.assert_allclose(pm, 0.5 * (p0 + back), rtol=1e-4, atol=1e-3)


def test_teacher_source_examples(tmp_path):
  names = _write_crops(tmp_path / 'crops', 4)
  data = FakeData(0, 1, 1)
  stats, model = data.param_stats, data.model
  p = np.asarray(stats.dewhiten(np.zeros((4, 62), np.float32)), np.float32)
  p[:, 12] += np.arange(4) * stats.std[12]
  src = T.TeacherSource(tmp_path / 'crops', names, p, stats, model, 'v1')
  assert len(src) == 4
  ex = src[2]
  np.testing.assert_allclose(ex['params'], (p[2] - stats.mean) / stats.std, atol=1e-5)
  lms = R.lms68_from_params(R.LandmarkModelNP(model), p[2], 'v1')
  np.testing.assert_allclose(ex['lms68'], lms, atol=1e-4)
  np.testing.assert_allclose(ex['points18'], LM.SEL18_MATRIX @ lms, atol=1e-4)
  assert ex['mask18'].sum() == 18 and ex['image'].shape == (120, 120, 3)
  with pytest.raises(DaslError, match='3 teacher labels for 4 crops'):
    T.TeacherSource(tmp_path / 'crops', names, p[:3], stats, model, 'v1')


def test_jitter_points_has_the_asked_mean_error():
  rng = np.random.default_rng(0)
  pts = jnp.asarray(rng.uniform(20, 100, (2000, 18, 2)), jnp.float32)
  mask = jnp.ones((2000, 18))
  out = LM.jitter_points(jax.random.PRNGKey(1), pts, mask, 0.058, 1.3)
  p = np.asarray(pts, np.float64)
  d = np.sqrt(np.prod(p.max(1) - p.min(1), axis=-1)) * 1.3     # numpy face size
  err = np.linalg.norm(np.asarray(out) - p, axis=-1).mean(1) / d
  assert abs(err.mean() - 0.058) < 0.002
  # Invisible points do not set the face size.
  m = np.ones((1, 18), np.float32)
  m[0, 0] = 0
  far = np.asarray(pts[:1]).copy()
  far[0, 0] = [1e4, 1e4]
  s = LM.box_size(jnp.asarray(far), jnp.asarray(m))
  np.testing.assert_allclose(s, LM.box_size(pts[:1, 1:]), rtol=1e-6)


@pytest.mark.slow  # two tiny 2DASL steps compiled (~20 s on a 2-core CPU): whole suite only
def test_flm_jitter_never_touches_the_wild_targets():
  """With zero FLM weights the jittered input cannot change the output, so L_2d_con
  (prediction against the given points) must be identical with and without jitter."""
  data = FakeData(seed=0, batch_3d=4, batch_wild=4)
  b3, bw = data.next()
  vals = []
  for jit in (0.0, 0.1):
    cfg = tiny_config(flm_jitter=jit)
    compiled, state, consts, key = build(cfg, data)
    # Zero the FLM channel's conv weights (the 4th input channel).
    params = jax.tree_util.tree_map(np.array, jax.device_get(state.params))
    k = params['Conv_0']['kernel']
    k[:, :, 3, :] = 0
    state = state.replace(params=compiled.put_replicated(params))
    _, m = compiled(state, b3, bw, key, consts)
    vals.append(float(m['l2d_con']))
  assert vals[0] == pytest.approx(vals[1], rel=1e-6)


def test_ema_warmup_and_critic_mismatch_negatives():
  """One step with both options on (merged: each costs a step's compilation): the EMA
  of the weights with its warm-up, and the mismatch negatives' accuracy in the metrics;
  the default step has no such metric."""
  data = FakeData(seed=0, batch_3d=4, batch_wild=4)
  cfg = tiny_config(critic_mismatch=True)
  cfg.train.ema_decay = 0.99
  compiled, state, consts, key = build(cfg, data)
  p0 = jax.device_get(state.params)
  s1, m = compiled(state, *data.next(), key, consts)
  p1, e1 = jax.device_get(s1.params), jax.device_get(s1.ema['params'])
  d = min(0.99, 1.0 / 10.0)   # step 0 of the warm-up
  for a, b, e in zip(jax.tree_util.tree_leaves(p0), jax.tree_util.tree_leaves(p1),
                     jax.tree_util.tree_leaves(e1)):
    np.testing.assert_allclose(e, d * np.asarray(a) + (1 - d) * np.asarray(b), rtol=1e-5,
                               atol=1e-7)
  assert s1.eval_variables(True) is s1.ema and s1.eval_variables(False)['params'] is s1.params
  m = jax.device_get(m)
  assert 'critic_acc_mismatch' in m and 0.0 <= float(m['critic_acc_mismatch']) <= 1.0
  compiled, state, consts, key = build(tiny_config(), data)
  _, m = compiled(state, *data.next(), key, consts)
  assert 'critic_acc_mismatch' not in jax.device_get(m)
