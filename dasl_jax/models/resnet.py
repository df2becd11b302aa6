"""ResNet regressors: ResNet-18/34/50 as in 2DASL, and 3DDFA_V2's ResNet-22.

2DASL's backbone (``test_codes/resnet_xgtu_4chls.py`` of XgTu/2DASL) is a
torchvision ResNet-50 with a 4-channel first convolution, the final stage's
stride set to 1 (so a 120x120 crop keeps an 8x8 map instead of 4x4) and a
linear layer ``fc`` to 62 whitened parameters. Its pooling is
``AvgPool2d(7, stride=2)``, not a global mean: on the 8x8 map of a 120x120
crop that is the mean of the top-left 7x7 window (``pool='avg7s2'``; the
default ``'mean'`` averages the whole map). The number of input channels
follows the input (3 = colour, 4 = colour + FLM).

:class:`ResNet22` is 3DDFA_V2's ``resnet22`` (``models/resnet.py`` of
cleardusk/3DDFA_V2): a 5x5 stride-2 stem to 32 channels, a 3x3 conv to 64,
no max pool, three stages of basic blocks (3, 4, 3 blocks; 128, 256, 512
channels; each starts with stride 2) and a 1x1 conv with bias
(``conv_param``) to 62 outputs followed by global average pooling.

``variables_from_torch`` / ``resnet22_variables_from_torch`` convert the
PyTorch state dicts (key names as in those files) into Flax variables.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.errors import DaslError
from dasl_jax.models import layers, torch_state

# Blocks per stage; 18/34 use basic blocks, 50 bottlenecks.
STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
# Stage strides: the last is 1 in 2DASL (torchvision's is 2).
STRIDES = (1, 2, 2, 1)
BN_EPS = 1e-5  # torchvision's, so converted weights behave the same.
# 'mean': global average pooling; 'avg7s2': 2DASL's AvgPool2d(7, stride=2), which
# must give a 1x1 map (the final map is 7x7 or 8x8) since fc takes one vector.
POOLS = ('mean', 'avg7s2')


def _conv1x1(features, strides, name, dtype=jnp.float32):
  """1x1 convolution (no bias) as a matrix product on the subsampled input: the same
  function and 'kernel' (1, 1, Cin, Cout) as nn.Conv, but XLA:CPU's kernel gradient
  needs no activation transposes (benchmarks/README.md: ResNet-50 training ~1.7x faster).
  That form on the CPU backend only; ``nn.Conv`` elsewhere (same variables)."""
  if not layers.cpu_backend():  # accelerators: the ordinary convolution
    return nn.Conv(features, (1, 1), (strides, strides), padding='VALID', use_bias=False,
                   kernel_init=nn.initializers.lecun_normal(), dtype=dtype, name=name)
  conv = layers.PointwiseConv(features, nn.initializers.lecun_normal(), name=name)
  return lambda x: conv(x[:, ::strides, ::strides] if strides != 1 else x)


def _norm(train, name, fused, relu=False, dtype=jnp.float32):
  return layers.batch_norm(train, name, fused, relu, momentum=0.9, epsilon=BN_EPS, dtype=dtype)


class BasicBlock(nn.Module):
  features: int
  strides: int = 1
  fused_bn: bool = True
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name, relu=False: _norm(train, name, self.fused_bn, relu, self.dtype)
    y = nn.Conv(self.features, (3, 3), (self.strides,) * 2, padding=1, use_bias=False,
                dtype=self.dtype, name='conv1')(x)
    y = norm('bn1', relu=True)(y)
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                name='conv2')(y)
    # Zero-init of the last BN scale is a common trick; torchvision's default is 1.
    y = norm('bn2')(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = _conv1x1(self.features, self.strides, 'downsample_conv', self.dtype)(x)
      x = norm('downsample_bn')(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  features: int  # inner width; output is 4x
  strides: int = 1
  fused_bn: bool = True
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name, relu=False: _norm(train, name, self.fused_bn, relu, self.dtype)
    out = self.features * 4
    y = _conv1x1(self.features, 1, 'conv1', self.dtype)(x)
    y = norm('bn1', relu=True)(y)
    # torchvision v1.5: the stride sits on the 3x3 convolution.
    y = nn.Conv(self.features, (3, 3), (self.strides,) * 2, padding=1, use_bias=False,
                dtype=self.dtype, name='conv2')(y)
    y = norm('bn2', relu=True)(y)
    y = _conv1x1(out, 1, 'conv3', self.dtype)(y)
    y = norm('bn3')(y)
    if x.shape[-1] != out or self.strides != 1:
      x = _conv1x1(out, self.strides, 'downsample_conv', self.dtype)(x)
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
  pool: str = 'mean'
  # Activation dtype (float32 or bfloat16); parameters, BN statistics and output float32.
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth not in STAGES:
      raise ValueError(f'ResNet depth must be one of {sorted(STAGES)}, got {self.depth}')
    block = Bottleneck if self.depth == 50 else BasicBlock
    x = x.astype(self.dtype)
    x = nn.Conv(self.base_width, (7, 7), (2, 2), padding=3, use_bias=False, dtype=self.dtype,
                name='conv1')(x)
    x = _norm(train, 'bn1', self.fused_bn, relu=True, dtype=self.dtype)(x)
    # nn.max_pool's function; its XLA:CPU backward (select-and-scatter) is slower.
    x = layers.stem_max_pool(x, 2)
    for s, (n, stride) in enumerate(zip(STAGES[self.depth], self.strides)):
      for b in range(n):
        x = block(self.base_width * 2 ** s, stride if b == 0 else 1, self.fused_bn,
                  self.dtype, name=f'layer{s + 1}_{b}')(x, train)
    x = pool_features(x, self.pool)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name='fc')(x).astype(jnp.float32)


def pool_features(x, pool):
  """(B, H, W, C) -> (B, C) by ``pool`` (see POOLS)."""
  if pool == 'mean':
    return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
  if pool == 'avg7s2':
    if x.shape[1] not in (7, 8) or x.shape[2] not in (7, 8):
      raise DaslError(f"pool 'avg7s2' (2DASL's AvgPool2d(7, stride=2)) needs a 7x7 or 8x8 "
                      f'final map (a 120x120 input gives 8x8), got {x.shape[1]}x{x.shape[2]}')
    return jnp.mean(x[:, :7, :7], axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
  raise DaslError(f'ResNet pool must be one of {POOLS}, got {pool!r}')


# 3DDFA_V2 resnet22: (blocks, channels) per stage; every stage starts with stride 2.
R22_STAGES = ((3, 128), (4, 256), (3, 512))
R22_STEM = (32, 64)


class ResNet22(nn.Module):
  """3DDFA_V2's resnet22: (B, H, W, 3 or 4) float -> (B, num_outputs).

  ``conv_param`` (PyTorch: a 1x1 conv with bias before the global average pool)
  is applied after the pool as a Dense layer: the same function, since both
  are linear.
  """
  num_outputs: int = 62
  fused_bn: bool = True
  dtype: object = jnp.float32  # activations; parameters, BN statistics and output float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = lambda name: _norm(train, name, self.fused_bn, relu=True, dtype=self.dtype)
    x = x.astype(self.dtype)
    x = nn.Conv(R22_STEM[0], (5, 5), (2, 2), padding=2, use_bias=False, dtype=self.dtype,
                name='conv1')(x)
    x = norm('bn1')(x)
    x = nn.Conv(R22_STEM[1], (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                name='conv2')(x)
    x = norm('bn2')(x)
    for s, (n, c) in enumerate(R22_STAGES):
      for b in range(n):
        x = BasicBlock(c, 2 if b == 0 else 1, self.fused_bn, self.dtype,
                       name=f'layer{s + 1}_{b}')(x, train)
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name='conv_param')(x).astype(jnp.float32)


# --------------------------------------------------------------------------
# PyTorch state dicts -> Flax variables.

_BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var')


def _bn_shapes(shapes, prefix, c):
  for k in _BN_KEYS:
    shapes[f'{prefix}.{k}'] = (c,)


def _block_shapes(shapes, prefix, c_in, planes, stride, bottleneck):
  """Torch shapes of one block; returns its output channels."""
  if bottleneck:
    out = planes * 4
    shapes[f'{prefix}.conv1.weight'] = (planes, c_in, 1, 1)
    shapes[f'{prefix}.conv2.weight'] = (planes, planes, 3, 3)
    shapes[f'{prefix}.conv3.weight'] = (out, planes, 1, 1)
    convs = (('conv1', 'bn1', planes), ('conv2', 'bn2', planes), ('conv3', 'bn3', out))
  else:
    out = planes
    shapes[f'{prefix}.conv1.weight'] = (planes, c_in, 3, 3)
    shapes[f'{prefix}.conv2.weight'] = (planes, planes, 3, 3)
    convs = (('conv1', 'bn1', planes), ('conv2', 'bn2', planes))
  for _, bn, c in convs:
    _bn_shapes(shapes, f'{prefix}.{bn}', c)
  if stride != 1 or c_in != out:
    shapes[f'{prefix}.downsample.0.weight'] = (out, c_in, 1, 1)
    _bn_shapes(shapes, f'{prefix}.downsample.1', out)
  return out


def torch_state_dict_shapes(depth=50, in_channels=4, num_outputs=62, base_width=64,
                            strides=STRIDES):
  """Shapes of a torchvision-style ResNet state dict (2DASL's ResNet-50 names)."""
  if depth not in STAGES:
    raise DaslError(f'ResNet depth must be one of {sorted(STAGES)}, got {depth}')
  bottleneck = depth == 50
  shapes = {'conv1.weight': (base_width, in_channels, 7, 7)}
  _bn_shapes(shapes, 'bn1', base_width)
  c = base_width
  for s, (n, stride) in enumerate(zip(STAGES[depth], strides)):
    for b in range(n):
      c = _block_shapes(shapes, f'layer{s + 1}.{b}', c, base_width * 2 ** s,
                        stride if b == 0 else 1, bottleneck)
  shapes['fc.weight'] = (num_outputs, c)
  shapes['fc.bias'] = (num_outputs,)
  return shapes


def resnet22_state_dict_shapes(in_channels=3, num_outputs=62):
  """Shapes of 3DDFA_V2's resnet22 state dict (``conv_lm`` excluded)."""
  shapes = {'conv1.weight': (R22_STEM[0], in_channels, 5, 5)}
  _bn_shapes(shapes, 'bn1', R22_STEM[0])
  shapes['conv2.weight'] = (R22_STEM[1], R22_STEM[0], 3, 3)
  _bn_shapes(shapes, 'bn2', R22_STEM[1])
  c = R22_STEM[1]
  for s, (n, planes) in enumerate(R22_STAGES):
    for b in range(n):
      c = _block_shapes(shapes, f'layer{s + 1}.{b}', c, planes, 2 if b == 0 else 1, False)
  shapes['conv_param.weight'] = (num_outputs, c, 1, 1)
  shapes['conv_param.bias'] = (num_outputs,)
  return shapes


def _convert_tree(sd, want, head):
  """Torch state dict (checked against ``want``) -> Flax ``{'params', 'batch_stats'}``.

  Names: ``layer1.0.conv1`` -> ``layer1_0/conv1``, ``downsample.0`` ->
  ``downsample_conv``, ``downsample.1`` -> ``downsample_bn``; conv weights OIHW ->
  HWIO; BN weight/bias -> params scale/bias, running_mean/var -> batch_stats
  mean/var; the head (``head``: fc or conv_param) -> Dense kernel (in, out).
  """
  params, stats = {}, {}

  def node(tree, path):
    for p in path:
      tree = tree.setdefault(p, {})
    return tree

  for key in want:
    parts = key.split('.')
    leaf = parts[-1]
    mod = parts[:-1]
    if mod[0] == head:
      w = sd[key]
      if leaf == 'weight':
        node(params, [head])['kernel'] = w.reshape(w.shape[0], -1).T
      else:
        node(params, [head])['bias'] = w
      continue
    if mod[0].startswith('layer'):
      mod = [f'{mod[0]}_{mod[1]}'] + mod[2:]
      if mod[1:] == ['downsample', '0']:
        mod = [mod[0], 'downsample_conv']
      elif mod[1:] == ['downsample', '1']:
        mod = [mod[0], 'downsample_bn']
    w = sd[key]
    if w.ndim == 4:
      node(params, mod)['kernel'] = w.transpose(2, 3, 1, 0)
    elif leaf == 'weight':
      node(params, mod)['scale'] = w
    elif leaf == 'bias':
      node(params, mod)['bias'] = w
    elif leaf == 'running_mean':
      node(stats, mod)['mean'] = w
    else:
      node(stats, mod)['var'] = w
  cast = lambda t: jax.tree_util.tree_map(lambda a: np.ascontiguousarray(a, np.float32), t)
  return {'params': cast(params), 'batch_stats': cast(stats)}


def variables_from_torch(state_dict, depth=50, in_channels=4, num_outputs=62, base_width=64,
                         source='state dict'):
  """torchvision-style ResNet state dict (2DASL's ResNet-50) -> Flax variables of
  :class:`ResNet` (same depth / base_width; strides as in 2DASL).

  Raises DaslError naming the key when a tensor is missing, unexpected or of
  another shape.
  """
  sd = torch_state.clean(state_dict)
  want = torch_state_dict_shapes(depth, in_channels, num_outputs, base_width)
  torch_state.check(sd, want, f'ResNet-{depth} ({in_channels} input channels)', source)
  return _convert_tree(sd, want, 'fc')


def resnet22_variables_from_torch(state_dict, in_channels=3, num_outputs=62,
                                  source='state dict'):
  """3DDFA_V2 resnet22 state dict -> Flax variables of :class:`ResNet22`.

  ``conv_lm`` (a landmark head its forward does not use) and
  ``num_batches_tracked`` are dropped. With ``in_channels=4`` a 3-channel
  ``conv1`` gets zero weights on the 4th (FLM) channel.
  """
  sd = torch_state.clean(state_dict, drop=('conv_lm.',))
  stored_in = torch_state.stored_in_channels(sd, in_channels, source)
  want = resnet22_state_dict_shapes(stored_in, num_outputs)
  torch_state.check(sd, want, '3DDFA_V2 resnet22', source)
  v = _convert_tree(sd, want, 'conv_param')
  v['params']['conv1']['kernel'] = torch_state.widen_first_conv(v['params']['conv1']['kernel'],
                                                                in_channels)
  return v
