"""The compiled 2DASL step: one trace, which parameters each loss moves, BN, NaN guard."""
import jax
import numpy as np
import pytest

from dasl_jax.training import step as step_lib
from dasl_jax.training.fake_data import FakeData
from tests.helpers.tiny_training import build, tiny_config


def _np(tree):
  return jax.tree_util.tree_map(lambda a: np.array(a), jax.device_get(tree))


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                   jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope='module')
def full():
  data = FakeData(seed=0, batch_3d=4, batch_wild=4)
  # A dict: the step donates its state, so each test stores the live one back.
  compiled, state, consts, key = build(tiny_config(), data)
  return {'data': data, 'compiled': compiled, 'state': state, 'consts': consts, 'key': key}


def _unpack(full):
  return full['data'], full['compiled'], full['state'], full['consts'], full['key']


def test_full_step_compiles_once_and_updates(full):
  data, compiled, state, consts, key = _unpack(full)
  snaps = [_np(state)]
  for _ in range(3):
    state, metrics = compiled(state, *data.next(), key, consts)
    snaps.append(_np(state))
  full['state'] = state
  assert compiled.traces == 1  # no recompilation after the first step
  m = jax.device_get(metrics)
  for k in ('l3d', 'l2d_con', 'l3d_con', 'lcyc', 'lsc', 'total', 'critic', 'lr', 'grad_norm'):
    assert np.isfinite(m[k]), k
  assert int(snaps[-1].step) == 3 and int(snaps[-1].bad_step) == -1
  for a, b in zip(snaps, snaps[1:]):
    assert not _same(a.params, b.params)
    assert not _same(a.batch_stats, b.batch_stats)  # batch norm trained
  # critic_every=2: steps 0 and 2 update the critic, step 1 does not, although
  # L_sc (which reads the critic) is on: the regressor's loss never moves it.
  assert not _same(snaps[0].critic_params, snaps[1].critic_params)
  assert _same(snaps[1].critic_params, snaps[2].critic_params)
  assert not _same(snaps[2].critic_params, snaps[3].critic_params)


def test_nonfinite_loss_keeps_state_and_names_term(full):
  data, compiled, state, consts, key = _unpack(full)
  b3, bw = data.next()
  b3['params'] = b3['params'].copy()
  b3['params'][0, 5] = np.nan
  before = _np(state)
  state, _ = compiled(state, b3, bw, key, consts)
  after = _np(state)
  assert compiled.traces == 1
  assert int(after.bad_step) == int(before.step)
  assert step_lib.LOSS_NAMES[int(after.bad_term)] == 'l3d'
  assert _same(before.params, after.params) and _same(before.critic_params, after.critic_params)


def test_critic_loss_does_not_move_regressor_and_frozen_bn():
  data = FakeData(seed=1, batch_3d=4, batch_wild=4)
  c = tiny_config(use_3d=False, use_2d=False, use_3d_con=False, use_cyc=False, use_sc=False,
                  train_critic=True)
  c.optim.weight_decay = 0.0
  c.model.freeze_bn = True
  compiled, state, consts, key = build(c, data)
  before = _np(state)
  state, m = compiled(state, *data.next(), key, consts)
  after = _np(state)
  assert np.isfinite(jax.device_get(m['critic']))
  assert _same(before.params, after.params)
  assert _same(before.batch_stats, after.batch_stats)  # frozen: no statistics update
  assert not _same(before.critic_params, after.critic_params)


def test_schedule_and_warmup():
  from dasl_jax.training.config import default_config
  from dasl_jax.training import optimizers
  c = default_config().optim
  s = optimizers.learning_rate_schedule(c, 1000)
  np.testing.assert_allclose([float(s(0)), float(s(500)), float(s(1000))],
                             [0.004, 0.004 * 0.001 ** 0.5, 0.004 * 0.001], rtol=1e-4)
  c.warmup_steps = 100
  s = optimizers.learning_rate_schedule(c, 1100)
  np.testing.assert_allclose([float(s(0)), float(s(50)), float(s(100)), float(s(1100))],
                             [0.0, 0.002, 0.004, 0.004 * 0.001], rtol=1e-4, atol=1e-9)


def test_sgd_matches_pytorch_nesterov_with_weight_decay():
  """Two steps against PyTorch's SGD update rule written out in numpy."""
  import optax
  from dasl_jax.training.config import default_config
  from dasl_jax.training import optimizers
  c = default_config().optim
  c.decay_to = 1.0
  tx, _ = optimizers.regressor_optimizer(c, 10)
  w = np.array([1.0, -2.0], np.float32)
  grads = [np.array([0.5, 0.25], np.float32), np.array([-1.0, 2.0], np.float32)]
  st, p = tx.init(w), w
  buf, ref = np.zeros(2), w.astype(np.float64)
  for g in grads:
    upd, st = tx.update(g, st, p)
    p = optax.apply_updates(p, upd)
    d = g + 5e-4 * ref              # weight decay into the gradient
    buf = 0.9 * buf + d             # momentum buffer (dampening 0)
    ref = ref - 0.004 * (d + 0.9 * buf)  # Nesterov
  np.testing.assert_allclose(np.asarray(p), ref, rtol=1e-6)


def test_widening_three_to_four_channels_keeps_outputs():
  import jax.numpy as jnp
  from dasl_jax.training.optimizers import adapt_variables
  from tests.helpers.tiny_training import TinyRegressor
  m = TinyRegressor()
  x3 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 120, 120, 3)), jnp.float32)
  x4 = jnp.concatenate([x3, jnp.ones((2, 120, 120, 1))], axis=-1)
  v3 = m.init(jax.random.PRNGKey(0), x3)
  v4 = m.init(jax.random.PRNGKey(1), x4)
  w = adapt_variables(v3, v4)
  k = w['params']['Conv_0']['kernel']
  assert k.shape[2] == 4 and np.all(k[:, :, 3] == 0)
  np.testing.assert_allclose(np.asarray(m.apply(w, x4)), np.asarray(m.apply(v3, x3)),
                             rtol=1e-5, atol=1e-6)


def test_init_from_converted_checkpoint_widens_first_conv(tmp_path, capfd):
  """A 3-channel model work dir (as the converter writes) starts a 4-channel run."""
  import jax.numpy as jnp
  from dasl_jax.io import checkpoint
  from dasl_jax.models import ModelConfig, create_regressor
  from dasl_jax.training import optimizers, state as state_lib
  cfg3 = ModelConfig(arch='resnet', depth=18, resnet_width=4, in_channels=3)
  m = create_regressor(cfg3)
  v3 = state_lib.init_variables(m, 5, (120, 120), 3)
  checkpoint.save_model(tmp_path / 'init', cfg3, v3, FakeData().param_stats)
  target = state_lib.init_variables(m, 6, (120, 120), 4)
  v4, restored = optimizers.load_init_variables(tmp_path / 'init', target)
  assert 'widened params/conv1/kernel' in capfd.readouterr().err
  k3, k4 = np.asarray(v3['params']['conv1']['kernel']), np.asarray(v4['params']['conv1']['kernel'])
  assert k4.shape == (7, 7, 4, 4) and np.array_equal(k4[:, :, :3], k3)
  assert np.all(k4[:, :, 3] == 0)
  np.testing.assert_array_equal(np.asarray(v4['params']['fc']['kernel']),
                                np.asarray(v3['params']['fc']['kernel']))
  assert restored.model_config.in_channels == 3


def test_init_checkpoint_network_must_be_the_configs(tmp_path):
  """A converted 2DASL model pools with ``avg7s2`` (the top-left 7x7 window of the
  8x8 map); a run that leaves --config.model.resnet_pool at 'mean' would train
  another function from the same variables without a word. Refused, and with the
  flag set the run's network computes what the saved model computes (the saved
  model restored on its own, through io.checkpoint)."""
  import dataclasses
  from dasl_jax.errors import DaslError
  from dasl_jax.io import checkpoint
  from dasl_jax.models import ModelConfig, create_regressor
  from dasl_jax.training import loop, state as state_lib
  saved = ModelConfig(arch='resnet', depth=18, resnet_width=4, in_channels=4,
                      resnet_pool='avg7s2')
  data = FakeData(seed=0, batch_3d=2, batch_wild=2)
  v = state_lib.init_variables(create_regressor(saved), 5, (120, 120), 4)
  checkpoint.save_model(tmp_path / 'init', saved, v, data.param_stats)
  config = tiny_config()
  config.model.arch, config.model.depth, config.model.resnet_width = 'resnet', 18, 4
  config.model.init_checkpoint = str(tmp_path / 'init')
  with pytest.raises(DaslError, match=r"init_checkpoint=.*init: its network has resnet_pool="
                     r"'avg7s2', the config 'mean'; set --config.model.resnet_pool=avg7s2"):
    loop.init_state(config, loop.build_step(config, data), data)
  config.model.resnet_pool = 'avg7s2'
  bundle = loop.build_step(config, data)
  state, _, _ = loop.init_state(config, bundle, data)
  r = checkpoint.restore(tmp_path / 'init')
  x = np.random.default_rng(0).normal(size=(2, 120, 120, 4)).astype(np.float32)
  want = np.asarray(r.module.apply(r.variables, x))
  np.testing.assert_allclose(np.asarray(bundle.module.apply(jax.device_get(state.variables), x)),
                             want, rtol=1e-5, atol=1e-5)
  mean_pool = create_regressor(dataclasses.replace(saved, resnet_pool='mean'))
  assert not np.allclose(np.asarray(mean_pool.apply(r.variables, x)), want, atol=1e-3)
