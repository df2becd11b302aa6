"""The train step and the inference function lower for GPU (cuda) and TPU with
``jax.export`` (no such device needed): no CPU-only construct in either.

Both forms of the networks are lowered: the CPU forms (what this machine traces:
``layers.cpu_backend()`` is true) and the accelerator forms (what a GPU/TPU
process traces; here by making ``layers.cpu_backend`` answer False), see
docs/ARCHITECTURE.md, "Backends".
"""
import re

import jax
import jax.numpy as jnp
import pytest

from dasl_jax import inference
from dasl_jax.io import checkpoint
from dasl_jax.inference import export
from dasl_jax.training.config import default_config
from dasl_jax.models import layers
from dasl_jax.training import loop
from tests.helpers.random_models import make_checkpoint

PLATFORMS = ('cuda', 'tpu')


@pytest.fixture(params=['cpu_forms', 'accelerator_forms'])
def forms(request, monkeypatch):
  if request.param == 'accelerator_forms':
    monkeypatch.setattr(layers, 'cpu_backend', lambda: False)
  return request.param


def _tiny_config(arch='mobilenet'):
  c = default_config()
  c.train.fake_data = True
  c.model.arch = arch
  c.model.width = 0.25
  c.model.depth = 18
  c.model.resnet_width = 4
  c.model.in_channels = 4
  c.critic.encoder_widths = (4, 8)
  c.critic.latent_dim = 16
  c.critic.hidden = (16, 16)
  c.data.batch_size_3d = 2
  c.data.batch_size_wild = 2
  c.train.num_steps = 4
  c.train.progress = False
  return c


def _lower_step(config, workdir):
  """The real factory (loop.setup: data, networks, optimisers, losses, critic) lowered."""
  run = loop.setup(config, workdir)
  assert run.has_wild  # the full 2DASL step: all losses and the critic update
  b3, bw = run.data.next()
  return run.compiled.export(PLATFORMS, run.state, b3, bw, run.base_key, run.consts)


# The real factory (data, networks, optimisers) set up and lowered, per form and network:
# ~8 s each on a 2-core CPU; the whole suite runs them, -m 'not slow' does not.
@pytest.mark.slow
@pytest.mark.parametrize('arch', ['mobilenet', 'resnet'])
def test_train_step_lowers_for_cuda_and_tpu(forms, arch, tmp_path):
  exp = _lower_step(_tiny_config(arch), tmp_path)
  assert exp.platforms == PLATFORMS
  if arch == 'mobilenet':
    # Depthwise: a grouped convolution in the accelerator forms, shifted slices on CPU.
    groups = [int(g) for g in re.findall(r'feature_group_count = (\d+)', exp.mlir_module())]
    assert any(g > 1 for g in groups) == (forms == 'accelerator_forms'), groups


@pytest.mark.slow  # as above, in bf16
@pytest.mark.parametrize('arch', ['mobilenet', 'resnet'])
def test_bf16_train_step_lowers_for_cuda_and_tpu(arch, tmp_path, monkeypatch):
  """--config.model.compute_dtype=bfloat16 in the accelerator forms: the regressor's
  convolutions in bf16, float32 parameters (the step's arguments)."""
  monkeypatch.setattr(layers, 'cpu_backend', lambda: False)
  c = _tiny_config(arch)
  c.model.compute_dtype = 'bfloat16'
  exp = _lower_step(c, tmp_path)
  assert exp.platforms == PLATFORMS
  text = exp.mlir_module()
  convs = re.findall(r'stablehlo\.convolution.*', text)
  bf16 = [line for line in convs if 'bf16' in line]
  # The regressor's stem on the 4-channel crops in bf16; the self-critic stays float32,
  # and it has far fewer convolutions than the regressor.
  assert any(re.search(r'tensor<\d+x120x120x4xbf16>', line) for line in bf16), convs[:2]
  assert len(bf16) > len(convs) - len(bf16) > 0, (len(bf16), len(convs))
  assert all(a.dtype != jnp.bfloat16 for a in exp.in_avals)  # state, batches: no bf16


def test_cpu_ops_lower_for_cuda_and_tpu():
  """Each custom-VJP op of models/layers.py, forward and gradient, bf16 operands too."""
  x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
  k3 = jax.ShapeDtypeStruct((3, 3, 1, 4), jnp.float32)
  k1 = jax.ShapeDtypeStruct((1, 1, 4, 6), jnp.float32)
  kc = jax.ShapeDtypeStruct((3, 3, 4, 6), jnp.float32)
  c = jax.ShapeDtypeStruct((4,), jnp.float32)

  def loss(f):
    return lambda *a: jnp.sum(jnp.sin(f(*a)))

  fns = {
      'depthwise3x3': (lambda x, k: layers.depthwise3x3(x, k, 2), (x, k3)),
      'pointwise_bf16': (lambda x, k: layers.pointwise(x, k, jnp.bfloat16), (x, k1)),
      'conv3x3_patches_bf16': (lambda x, k: layers.conv3x3_patches(x, k, 2, jnp.bfloat16),
                               (x, kc)),
      'batch_norm_train': (lambda x, s, b: layers.batch_norm_train(x, s, b, 1e-5, True)[0],
                           (x, c, c)),
      'max_pool3x3': (lambda x: layers.max_pool3x3(x, 2), (x,)),
  }
  for name, (f, args) in fns.items():
    g = jax.grad(loss(f), argnums=tuple(range(len(args))))
    for fn in (f, g):
      exp = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(*args)
      assert exp.platforms == PLATFORMS, name


# dot_dtype only changes the CPU forms (the accelerator forms use nn.Conv), so the
# accelerator forms are lowered once, in float32.
@pytest.mark.parametrize('forms,dot_dtype', [('cpu_forms', 'float32'),
                                             ('cpu_forms', 'bfloat16'),
                                             ('accelerator_forms', 'float32')],
                         indirect=['forms'])
def test_inference_function_lowers_for_cuda_and_tpu(forms, dot_dtype, tmp_path):
  restored = checkpoint.with_dot_dtype(
      checkpoint.restore(make_checkpoint(tmp_path / 'tiny4', seed=3)), dot_dtype)
  models = inference.face_models(restored)
  for flm in ('input', 'bootstrap'):
    exp, meta = export.export_model(restored, models.landmarks, flm=flm, platforms=PLATFORMS)
    assert tuple(meta['platforms']) == PLATFORMS and exp.platforms == PLATFORMS


@pytest.mark.slow  # ~50 s per network on the loaded 2-core machine (4 CPU compiles)
@pytest.mark.parametrize('arch', ['mobilenet', 'resnet'])
def test_accelerator_forms_compute_the_same_function(arch, monkeypatch):
  """Same variables, same outputs (train and eval mode) and batch statistics: Flax's
  standard ops (the accelerator forms) are the reference for the CPU forms."""
  import numpy as np
  from dasl_jax.models import ModelConfig, create_regressor
  cfg = ModelConfig.from_dict(dict(arch=arch, width=0.25, depth=18, in_channels=4,
                                   num_params=62, convention='v1', depthwise='auto',
                                   resnet_width=4), 'test')
  module = create_regressor(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 4))
  from tests.helpers.random_models import random_variables
  variables = random_variables(cfg, seed=1)  # no initialiser compile (AVX2: ~20 s)

  def both(v, x):
    return (module.apply(v, x, train=False),
            module.apply(v, x, train=True, mutable=['batch_stats']))

  outs = {}
  for name, cpu in (('cpu', True), ('accel', False)):
    monkeypatch.setattr(layers, 'cpu_backend', lambda cpu=cpu: cpu)
    outs[name] = jax.jit(both)(variables, x)  # traced here, under this form
  for a, b in zip(jax.tree_util.tree_leaves(outs['cpu']), jax.tree_util.tree_leaves(outs['accel'])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-4)


def test_malloc_tuning_is_off_when_an_accelerator_is_expected():
  """cpu_runtime decides before JAX starts: JAX_PLATFORMS names the backend."""
  import os
  import subprocess
  import sys
  code = ('from dasl_jax import cpu_runtime; '
          'print(cpu_runtime.accelerator_expected(), cpu_runtime.tune_malloc())')
  out = {}
  for platforms in ('cuda', 'tpu,cpu', 'cpu'):
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, JAX_PLATFORMS=platforms))
    assert r.returncode == 0, r.stderr[-2000:]
    out[platforms] = r.stdout.split()
  assert out['cuda'] == out['tpu,cpu'] == ['True', 'False']
  assert out['cpu'] == ['False', 'True']
