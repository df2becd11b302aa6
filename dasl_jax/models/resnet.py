"""ResNet-18/34/50 regressor as in 2DASL: NHWC, 3 or 4 input channels, last stage stride 1.

2DASL's backbone is a torchvision ResNet-50 with a 4-channel first convolution,
the final stage's stride set to 1 (so a 120x120 crop keeps an 8x8 map instead
of 4x4), global average pooling and a linear layer to 62 whitened parameters.
The number of input channels follows the input (3 = colour, 4 = colour + FLM).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dasl_jax.models import layers

# Blocks per stage; 18/34 use basic blocks, 50 bottlenecks.
STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
# Stage strides: the last is 1 in 2DASL (torchvision's is 2).
STRIDES = (1, 2, 2, 1)
BN_EPS = 1e-5  # torchvision's, so converted weights behave the same.


def _conv1x1(features, strides, name):
  """1x1 convolution (no bias) as a matrix product on the subsampled input: the same
  function and 'kernel' (1, 1, Cin, Cout) as nn.Conv, but XLA:CPU's kernel gradient
  needs no activation transposes (benchmarks/README.md: ResNet-50 training ~1.7x faster).
  That form on the CPU backend only; ``nn.Conv`` elsewhere (same variables)."""
  if not layers.cpu_backend():  # accelerators: the ordinary convolution
    return nn.Conv(features, (1, 1), (strides, strides), padding='VALID', use_bias=False,
                   kernel_init=nn.initializers.lecun_normal(), name=name)
  conv = layers.PointwiseConv(features, nn.initializers.lecun_normal(), name=name)
  return lambda x: conv(x[:, ::strides, ::strides] if strides != 1 else x)


def _norm(train, name, fused, relu=False):
  return layers.batch_norm(train, name, fused, relu, momentum=0.9, epsilon=BN_EPS)


class BasicBlock(nn.Module):
  features: int
  strides: int = 1
  fused_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name, relu=False: _norm(train, name, self.fused_bn, relu)
    y = nn.Conv(self.features, (3, 3), (self.strides,) * 2, padding=1, use_bias=False,
                name='conv1')(x)
    y = norm('bn1', relu=True)(y)
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name='conv2')(y)
    # Zero-init of the last BN scale is a common trick; torchvision's default is 1.
    y = norm('bn2')(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = _conv1x1(self.features, self.strides, 'downsample_conv')(x)
      x = norm('downsample_bn')(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  features: int  # inner width; output is 4x
  strides: int = 1
  fused_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name, relu=False: _norm(train, name, self.fused_bn, relu)
    out = self.features * 4
    y = _conv1x1(self.features, 1, 'conv1')(x)
    y = norm('bn1', relu=True)(y)
    # torchvision v1.5: the stride sits on the 3x3 convolution.
    y = nn.Conv(self.features, (3, 3), (self.strides,) * 2, padding=1, use_bias=False,
                name='conv2')(y)
    y = norm('bn2', relu=True)(y)
    y = _conv1x1(out, 1, 'conv3')(y)
    y = norm('bn3')(y)
    if x.shape[-1] != out or self.strides != 1:
      x = _conv1x1(out, self.strides, 'downsample_conv')(x)
      x = norm('downsample_bn')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """(B, H, W, 3 or 4) float -> (B, num_outputs).

  depth: 18, 34 or 50. base_width: channels of the stem and first stage (64 in
  the paper; tests use 8). strides: per-stage strides (last stage 1 as in 2DASL).
  """
  depth: int = 50
  num_outputs: int = 62
  base_width: int = 64
  strides: Sequence[int] = STRIDES
  # BN (+ ReLU) as layers.BatchNorm (custom VJP: fewer full-size temporaries).
  fused_bn: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth not in STAGES:
      raise ValueError(f'ResNet depth must be one of {sorted(STAGES)}, got {self.depth}')
    block = Bottleneck if self.depth == 50 else BasicBlock
    x = nn.Conv(self.base_width, (7, 7), (2, 2), padding=3, use_bias=False, name='conv1')(x)
    x = _norm(train, 'bn1', self.fused_bn, relu=True)(x)
    # nn.max_pool's function; its XLA:CPU backward (select-and-scatter) is slower.
    x = layers.stem_max_pool(x, 2)
    for s, (n, stride) in enumerate(zip(STAGES[self.depth], self.strides)):
      for b in range(n):
        x = block(self.base_width * 2 ** s, stride if b == 0 else 1, self.fused_bn,
                  name=f'layer{s + 1}_{b}')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_outputs, name='fc')(x)
