"""Shapes and parameter counts of the ResNet regressor and the self-critic.

Reference counts are torchvision's published totals (resnet18 11,689,512;
resnet34 21,797,672; resnet50 25,557,032, all with a 1000-way fc on 3
channels), corrected for a 62-way head and, for 4 channels, 64*7*7 more
first-conv weights.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.models import ModelConfig, create_regressor
from dasl_jax.models.critic import SelfCritic
from dasl_jax.models.resnet import ResNet

TORCHVISION = {18: (11_689_512, 512), 34: (21_797_672, 512), 50: (25_557_032, 2048)}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('depth', [18, 34, 50])
@pytest.mark.parametrize('channels', [3, 4])
def test_resnet_parameter_count(depth, channels):
  total, feat = TORCHVISION[depth]
  want = total - (feat * 1000 + 1000) + (feat * 62 + 62) + (channels - 3) * 64 * 7 * 7
  v = jax.eval_shape(lambda: ResNet(depth=depth).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 120, 120, channels))))
  assert _count(v['params']) == want
  assert v['params']['fc']['kernel'].shape == (feat, 62)


def test_resnet_forward_and_last_stage_stride():
  m = ResNet(depth=18, base_width=4)
  x = jnp.ones((2, 120, 120, 4))
  v = jax.jit(m.init)(jax.random.key(0, impl='rbg'), x)  # rbg: compiles fast
  y, upd = jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=['batch_stats']))(v, x)
  assert y.shape == (2, 62) and np.all(np.isfinite(y))
  # Batch statistics change in training mode, not in inference mode.
  assert not np.allclose(upd['batch_stats']['bn1']['mean'], v['batch_stats']['bn1']['mean'])
  _, state = jax.eval_shape(lambda v, x: m.apply(
      v, x, train=False, capture_intermediates=True, mutable=['intermediates']), v, x)
  # 120 -> 60 (stem) -> 30 (pool) -> 30, 15, 8 and 8: the last stage keeps stride 1.
  assert state['intermediates']['layer4_1']['__call__'][0].shape == (2, 8, 8, 32)


def test_create_regressor_resnet():
  cfg = ModelConfig(arch='resnet', depth=18, resnet_width=8, in_channels=3)
  m = create_regressor(cfg)
  v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 120, 120, 3))))
  assert v['params']['conv1']['kernel'].shape == (7, 7, 3, 8)


def test_critic_shapes_and_head_size():
  c = SelfCritic()
  v = jax.eval_shape(lambda: c.init(jax.random.PRNGKey(0), jnp.zeros((2, 120, 120, 3)),
                                    jnp.zeros((2, 62))))
  p = v['params']
  head = _count({k: p[k] for k in ('fc0', 'fc1', 'logit')})
  # Paper: (512 + 62) -> 1024 -> 1024 -> 1.
  assert head == (574 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 + 1)
  small = SelfCritic(encoder_widths=(4, 8), latent_dim=16, hidden=(8, 8))
  x, q = jnp.ones((3, 120, 120, 3)), jnp.ones((3, 62))
  vs = jax.eval_shape(small.init, jax.random.PRNGKey(0), x, q)
  assert jax.eval_shape(small.apply, vs, x, q).shape == (3,)
  z = jax.eval_shape(lambda v, x: small.apply(v, x, method=SelfCritic.encode), vs, x)
  assert z.shape == (3, 16)
