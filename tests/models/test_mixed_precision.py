"""Mixed precision (``compute_dtype='bfloat16'``): bf16 activations, float32 parameters,
batch-norm statistics and outputs, against the same network in float32 as the reference.

Both the CPU forms and the accelerator forms (``nn.Conv`` / ``nn.BatchNorm``, picked by
patching ``layers.cpu_backend``) are run; XLA:CPU executes both.
"""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dasl_jax.errors import DaslError
from dasl_jax.models import ModelConfig, create_regressor, layers
from dasl_jax.training import config as C
from tests.helpers.random_models import random_variables

# A bf16 mantissa has 8 bits (relative rounding 2^-9 = 0.2%); through ~15 to 30 layers
# the error of the whole network grows to about 1%. 5% of the output's scale is the bound
# (a float16-like or broken path, e.g. a statistic in bf16 or a dropped BN, is far off).
REL_TOL = 0.05

CONFIGS = {
    'mobilenet': dict(arch='mobilenet', width=0.25),
    # ResNet-50 shares its blocks' dtype handling with ResNet-18 (bottleneck aside);
    # it is left out for CI time.
    'resnet18': dict(arch='resnet', depth=18, resnet_width=8),
}


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def _input(b=4, c=4):
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.normal(size=(b, 120, 120, c)).astype(np.float32))


# The accelerator forms are run by the whole suite only (-m 'not slow' skips them): four
# more network compilations per case, for code a CPU never runs.
@pytest.fixture(params=['cpu_forms', pytest.param('accelerator_forms', marks=pytest.mark.slow)])
def backend(request, monkeypatch):
  if request.param == 'accelerator_forms':
    monkeypatch.setattr(layers, 'cpu_backend', lambda: False)
  return request.param


def _bn_layers(tree, path=''):
  if 'mean' in tree and 'var' in tree:
    yield path, tree
    return
  for k, v in tree.items():
    yield from _bn_layers(v, f'{path}/{k}')


def _check_bn_stats(s32, s16, first):
  """All statistics float32; for the ``first`` layers: the running statistics after
  one update from (0, 1) give the batch's mean and variance
  recovered exactly (momentum 0.9); over each layer's channels, the difference's norm
  within REL_TOL of the norm of the standard deviations (means) and of the variances."""
  l32, l16 = dict(_bn_layers(s32)), dict(_bn_layers(s16))
  assert l32.keys() == l16.keys() and l32
  for k in l16:
    assert l16[k]['mean'].dtype == jnp.float32 and l16[k]['var'].dtype == jnp.float32
  # The first layers in the order the network runs them (Flax keeps creation order).
  for k in list(l32)[:first]:
    m32, v32 = np.asarray(l32[k]['mean']) / 0.1, (np.asarray(l32[k]['var']) - 0.9) / 0.1
    m16, v16 = np.asarray(l16[k]['mean']) / 0.1, (np.asarray(l16[k]['var']) - 0.9) / 0.1
    sd = np.sqrt(np.maximum(v32, 0))
    assert np.linalg.norm(m16 - m32) <= REL_TOL * np.linalg.norm(sd) + 1e-6, k
    assert _rel(v16, v32) < REL_TOL, (k, _rel(v16, v32))


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_bf16_forward_matches_float32(name, backend):
  f32 = ModelConfig(**CONFIGS[name])
  bf = ModelConfig(**CONFIGS[name], compute_dtype='bfloat16')
  x = _input()
  m32, m16 = create_regressor(f32), create_regressor(bf)
  shapes = jax.eval_shape(m32.init, jax.random.PRNGKey(0), x[:1])
  shapes16 = jax.eval_shape(m16.init, jax.random.PRNGKey(0), x[:1])
  # Same variables (names, shapes, float32) whatever the compute dtype.
  assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(shapes16)
  for a, b in zip(jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(shapes16)):
    assert a.shape == b.shape and a.dtype == b.dtype == jnp.float32
  v = random_variables(f32)  # any weights serve: both precisions run the same ones
  # Jitted: run op by op, the networks' first calls cost minutes on an AVX2 CPU.
  infer = lambda m: jax.jit(lambda v, x: m.apply(v, x))
  # Inference mode (running statistics): the whole network within REL_TOL.
  y32, y16 = infer(m32)(v, x), infer(m16)(v, x)
  assert y16.dtype == jnp.float32 and y16.shape == y32.shape
  assert np.all(np.isfinite(y16))
  assert 0 < _rel(y16, y32) < REL_TOL, (name, backend, _rel(y16, y32))
  # Training mode (batch statistics). A randomly initialised network with batch norm
  # in training mode amplifies small perturbations layer after layer: in float32, a
  # 2^-9 relative change of the input alone moves MobileNet x0.5's output by 7%
  # (bf16 activations: ~20%), so the comparison is on the first layers' statistics,
  # where the difference is still rounding (0.1% to 0.6%), and the output is only
  # checked to be finite float32.
  train = lambda m: jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=['batch_stats']))
  y32, s32 = train(m32)(v, x)
  y16, s16 = train(m16)(v, x)
  assert y16.dtype == jnp.float32 and np.all(np.isfinite(y16))
  _check_bn_stats(s32['batch_stats'], s16['batch_stats'], first=6)


def _step_config(dtype):
  c = C.default_config()
  c.model.arch = 'mobilenet'
  c.model.width = 0.25
  c.model.compute_dtype = dtype
  c.critic.encoder_widths = (4, 8)
  c.critic.latent_dim = 16
  c.critic.hidden = (16, 16)
  c.optim.lr = 1e-3
  c.train.num_steps = 10
  # Batch norm on its running statistics: at initialisation, batch statistics amplify
  # rounding (see above: the total loss moved 10% with them); the train-mode statistics
  # in bf16 are checked by the forward test.
  c.model.freeze_bn = True
  C.check_config(c)
  return ml_collections.ConfigDict(c.to_dict())


# Experiment-sized: two full 2DASL train steps compiled (float32 and bf16), ~70 s on a
# 2-core CPU; the whole suite runs it, the quick tier (-m 'not slow') does not.
@pytest.mark.slow
def test_bf16_train_step_params_float32_losses_close():
  from dasl_jax.training import loop
  from dasl_jax.training.fake_data import FakeData
  out = {}
  start = None
  for dtype in ('float32', 'bfloat16'):
    data = FakeData(seed=0, batch_3d=4, batch_wild=4)
    config = _step_config(dtype)
    config.data.convention = data.convention
    bundle = loop.build_step(config, data)
    assert bundle.model_cfg.compute_dtype == dtype
    if start is None:
      start = loop.init_state(config, bundle, data)
      p0 = jax.device_get(start[0].params)
    # The bf16 run starts from the same float32 state (its variables are the float32
    # network's: the forward test checks that) rather than compile the initialisers
    # again (~15 s on an AVX2 CPU).
    state, consts, _ = start
    state = jax.tree_util.tree_map(jnp.copy, state)  # the step donates its input state
    key = bundle.compiled.put_replicated(jax.random.PRNGKey(0))
    state, metrics = bundle.compiled(state, *data.next(), key,
                                     consts)
    out[dtype] = (p0, jax.device_get(state.params), jax.device_get(state.batch_stats),
                  jax.device_get(metrics))
  p0_32, p32, bs32, m32 = out['float32']
  p0_16, p16, bs16, m16 = out['bfloat16']
  for leaf in jax.tree_util.tree_leaves((p16, bs16)):  # parameters and statistics
    assert leaf.dtype == np.float32
  for k in ('l3d', 'l2d_con', 'l3d_con', 'lcyc', 'lsc', 'total', 'grad_norm'):
    assert np.isfinite(m16[k]), k
    assert np.asarray(m16[k]).dtype == np.float32, k
  for k in ('l3d', 'total', 'grad_norm'):
    assert abs(float(m16[k]) - float(m32[k])) <= REL_TOL * abs(float(m32[k])), (k, m16[k], m32[k])
  # The update (new - old weights) points the same way in both precisions.
  d32 = np.concatenate([(b - a).ravel() for a, b in zip(jax.tree_util.tree_leaves(p0_32),
                                                          jax.tree_util.tree_leaves(p32))])
  d16 = np.concatenate([(b - a).ravel() for a, b in zip(jax.tree_util.tree_leaves(p0_16),
                                                          jax.tree_util.tree_leaves(p16))])
  cos = float(d32 @ d16 / np.linalg.norm(d32) / np.linalg.norm(d16))
  assert cos > 0.95, cos
  assert _rel(d16, d32) < 0.2


def test_compute_dtype_flag_and_model_config_files():
  c = C.default_config()
  c.model.compute_dtype = 'float16'
  with pytest.raises(DaslError, match=r"^--config\.model\.compute_dtype='float16': must be "
                                      r'float32 or bfloat16$'):
    C.check_config(c)
  # An older model_config.json (no compute_dtype) reads as float32, and a float32
  # config writes the same file as before (no new key).
  old = {'arch': 'mobilenet', 'width': 0.5, 'depthwise': 'auto', 'in_channels': 4,
         'num_params': 62, 'convention': 'v1'}
  cfg = ModelConfig.from_dict(old)
  assert cfg.compute_dtype == 'float32'
  assert json.loads(cfg.to_json()) == old
  bf = ModelConfig.from_dict(dict(old, compute_dtype='bfloat16'))
  assert json.loads(bf.to_json())['compute_dtype'] == 'bfloat16'
  assert ModelConfig.from_dict(json.loads(bf.to_json())) == bf
  with pytest.raises(DaslError, match='compute_dtype must be one of'):
    ModelConfig.from_dict(dict(old, compute_dtype='float16'))
