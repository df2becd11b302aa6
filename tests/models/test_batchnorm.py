"""layers.BatchNorm (custom VJP) against Flax's nn.BatchNorm (+ nn.relu) differentiated by JAX.

The reference is Flax's module under autodiff, an independent formulation of the
same function; the custom backward pass is checked for every input and for
non-zero cotangents of the returned statistics (against autodiff of a plain
jnp version).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.models import layers
from dasl_jax.models.mobilenet import MobileNetV1
from dasl_jax.models.resnet import ResNet


def _variables(rng, c):
  f = lambda a: jnp.asarray(a, jnp.float32)
  return {'params': {'scale': f(rng.normal(size=c)), 'bias': f(rng.normal(size=c))},
          'batch_stats': {'mean': f(rng.normal(size=c)), 'var': f(0.5 + rng.uniform(size=c))}}


def _close(a, b, rel):
  np.testing.assert_allclose(a, b, rtol=0, atol=rel * max(float(jnp.abs(b).max()), 1e-12))


@pytest.mark.parametrize('relu', [True, False])
@pytest.mark.parametrize('train', [True, False])
def test_matches_flax_batchnorm(relu, train):
  rng = np.random.default_rng(0)
  x = jnp.asarray(3 * rng.normal(size=(4, 5, 6, 8)) + 1, jnp.float32)
  r = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  v = _variables(rng, 8)
  ref = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
  new = layers.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, relu=relu)
  assert (jax.tree.map(jnp.shape, new.init(jax.random.key(0), x))
          == jax.tree.map(jnp.shape, ref.init(jax.random.key(0), x)))
  post = nn.relu if relu else (lambda y: y)

  def run(module, post):
    def loss(params, x):
      y, upd = module.apply({'params': params, 'batch_stats': v['batch_stats']}, x,
                            mutable=['batch_stats'])
      return jnp.sum(post(y) * r), (post(y), upd)
    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(v['params'], x)

  (_, (y0, s0)), (gp0, gx0) = run(ref, post)
  (_, (y1, s1)), (gp1, gx1) = run(new, lambda y: y)
  _close(y1, y0, 1e-6)
  _close(gx1, gx0, 1e-5)
  for k in ('scale', 'bias'):
    _close(gp1[k], gp0[k], 1e-5)
  for k in ('mean', 'var'):  # running averages (unchanged in eval mode)
    _close(s1['batch_stats'][k], s0['batch_stats'][k], 1e-6)
  if train:
    assert not np.allclose(s1['batch_stats']['mean'], v['batch_stats']['mean'])


def test_vjp_with_statistics_cotangents():
  """All three outputs (y, mean, var) differentiated at once, against jnp autodiff."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 4, 5, 6)), jnp.float32)
  scale, bias = (jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(2))

  def plain(x, scale, bias):
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean(x * x, (0, 1, 2)) - mean ** 2
    y = jnp.maximum((x - mean) / jnp.sqrt(var + 1e-3) * scale + bias, 0)
    return y, mean, var

  cts = tuple(jnp.asarray(rng.normal(size=s.shape), jnp.float32)
              for s in plain(x, scale, bias))
  got = jax.vjp(lambda *a: layers.batch_norm_train(*a, 1e-3, True), x, scale, bias)[1](cts)
  want = jax.vjp(plain, x, scale, bias)[1](cts)
  for a, b in zip(got, want):
    _close(a, b, 2e-5)


def test_bfloat16_input_keeps_float32_statistics():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3, 3, 4)), jnp.bfloat16)
  y, mean, var = layers.batch_norm_train(x, jnp.ones(4), jnp.zeros(4), 1e-5, False)
  assert y.dtype == jnp.bfloat16 and mean.dtype == var.dtype == jnp.float32
  _close(mean, jnp.mean(x.astype(jnp.float32), (0, 1, 2)), 1e-6)


# Gradients of two whole networks per case (~20 s of compilation each on a 2-core CPU):
# the whole suite runs them, -m 'not slow' does not.
@pytest.mark.slow
@pytest.mark.parametrize('make', [
    lambda fused: MobileNetV1(0.25, depthwise='shifted', fused_bn=fused),
    lambda fused: ResNet(depth=50, base_width=4, fused_bn=fused)], ids=['mobilenet', 'resnet50'])
def test_networks_same_with_either_batchnorm(make):
  """fused_bn=True/False: same variables, train-mode outputs, running statistics and
  parameter gradients (checked on the whole tree, relative to its norm)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 32, 32, 4)), jnp.float32)
  fused, flax_bn = make(True), make(False)
  shapes = jax.eval_shape(flax_bn.init, jax.random.key(0), x)
  assert (jax.tree.map(jnp.shape, jax.eval_shape(fused.init, jax.random.key(0), x))
          == jax.tree.map(jnp.shape, shapes))
  v = jax.tree.map(lambda s: jnp.asarray(0.5 + rng.uniform(size=s.shape) if len(s.shape) == 1
                                         else 0.3 * rng.normal(size=s.shape), jnp.float32),
                   shapes)

  def run(m):
    def loss(p):
      out, upd = m.apply({'params': p, 'batch_stats': v['batch_stats']}, x, train=True,
                         mutable=['batch_stats'])
      return jnp.sum(out ** 2), (out, upd)
    return jax.jit(jax.grad(loss, has_aux=True))(v['params'])

  (g1, (y1, s1)), (g0, (y0, s0)) = run(fused), run(flax_bn)
  _close(y1, y0, 1e-4)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s0)):
    _close(a, b, 1e-4)
  flat = lambda t: jnp.concatenate([a.ravel() for a in jax.tree.leaves(t)])
  assert float(jnp.linalg.norm(flat(g1) - flat(g0)) / jnp.linalg.norm(flat(g0))) < 1e-3
