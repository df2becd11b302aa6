"""Probe model: MobileNetV1 with the ops of dasl_jax.models.layers switched on one by one.

Same module names, parameter shapes and function as dasl_jax.models.mobilenet.MobileNetV1
(checked by tests/test_benchmarks_run.py); ``fast`` is a set of {'dw', 'pw', 'stem'}.
"""
import flax.linen as nn
import jax.numpy as jnp

from dasl_jax.models import layers
from dasl_jax.models import mobilenet as mb


class Block(nn.Module):
  features: int
  stride: int
  fast: frozenset

  @nn.compact
  def __call__(self, x, train=False):
    if 'dw' in self.fast:
      x = layers.DepthwiseConv3x3(self.stride, mb._conv_init, name='conv_dw')(x)
    else:
      x = mb.DepthwiseConv3x3(self.stride, 'shifted', name='conv_dw')(x)
    x = mb._bn_relu(train, 'bn_dw', False)(x)
    if 'pw' in self.fast:
      x = layers.PointwiseConv(self.features, mb._conv_init, name='conv_sep')(x)
    else:
      x = nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=mb._conv_init,
                  name='conv_sep')(x)
    return mb._bn_relu(train, 'bn_sep', False)(x)


class MobileNetV1Fast(nn.Module):
  width: float = 0.5
  num_outputs: int = 62
  fast: frozenset = frozenset({'dw', 'pw', 'stem'})

  @nn.compact
  def __call__(self, x, train=False):
    chans = mb.channels(self.width)
    if 'stem' in self.fast:
      x = layers.Conv3x3(chans[0], 2, mb._conv_init, name='conv1')(x)
    else:
      x = nn.Conv(chans[0], (3, 3), strides=(2, 2), padding=mb.PAD1, use_bias=False,
                  kernel_init=mb._conv_init, name='conv1')(x)
    x = mb._bn_relu(train, 'bn1', False)(x)
    for (name, _, stride), c in zip(mb.BLOCKS, chans[1:]):
      x = Block(c, stride, frozenset(self.fast), name=name)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_outputs, name='fc_param')(x)
