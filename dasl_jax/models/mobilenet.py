"""MobileNetV1 exactly as 3DDFA_V2 builds it (``models/mobilenet_v1.py``).

A 3x3 stride-2 conv (no bias) + BN + ReLU, 13 depthwise-separable blocks
(depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU), global average pooling
and a linear layer (``fc_param``). Channel counts are ``int(c * width)``.
Module names follow the PyTorch state dict (``conv1``, ``bn1``, ``dw2_1`` ...
``dw6``, ``fc_param``) so the converter is a rename plus transposes.

PyTorch pads every 3x3 conv by exactly one pixel on each side. For stride 2 on
an even input, XLA's 'SAME' would pad (0, 1) instead and shift the sampling
grid by one pixel, so padding is always explicit ``((1, 1), (1, 1))``.

The depthwise conv has two implementations with the same parameter (a
``(3, 3, 1, C)`` kernel, the layout of a grouped ``lax.conv``):
``'grouped'`` (``feature_group_count=C``; fast with cuDNN) and ``'shifted'``
(nine strided slices of the padded input times their ``(C,)`` taps, summed;
about 9x faster on XLA:CPU, see PERFORMANCE.md). ``'auto'`` picks shifted on
CPU.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.errors import DaslError
from dasl_jax.models import layers, torch_state

DEPTHWISE_IMPLS = ('auto', 'grouped', 'shifted')
BN_EPS = 1e-5
# PyTorch's BN momentum 0.1 is Flax's 0.9 (weight of the old running value).
BN_MOMENTUM = 0.9
PAD1 = ((1, 1), (1, 1))

# (name, output channels at width 1, stride) of the 13 depthwise-separable blocks.
BLOCKS: Tuple[Tuple[str, int, int], ...] = (
    ('dw2_1', 64, 1), ('dw2_2', 128, 2),
    ('dw3_1', 128, 1), ('dw3_2', 256, 2),
    ('dw4_1', 256, 1), ('dw4_2', 512, 2),
    ('dw5_1', 512, 1), ('dw5_2', 512, 1), ('dw5_3', 512, 1),
    ('dw5_4', 512, 1), ('dw5_5', 512, 1), ('dw5_6', 1024, 2),
    ('dw6', 1024, 1),
)
STEM_CHANNELS = 32

# 3DDFA_V2 initialises convs with kaiming_normal(mode='fan_out', relu).
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def resolve_depthwise(impl: str) -> str:
  """'auto' -> 'shifted' on the CPU backend, 'grouped' elsewhere."""
  if impl not in DEPTHWISE_IMPLS:
    raise DaslError(f'depthwise must be one of {DEPTHWISE_IMPLS}, got {impl!r}')
  if impl == 'auto':
    return 'shifted' if layers.cpu_backend() else 'grouped'
  return impl


def depthwise_grouped(x, kernel, stride):
  """Depthwise 3x3 as a grouped convolution.

  Args:
    x: (B, H, W, C); kernel: (3, 3, 1, C); stride: 1 or 2.
  Returns:
    (B, Ho, Wo, C) with PyTorch's padding=1.
  """
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), window_strides=(stride, stride), padding=PAD1,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=x.shape[-1])


def depthwise_shifted(x, kernel, stride):
  """Depthwise 3x3 as nine shifted, strided slices times their taps, summed.

  Same maths and arguments as :func:`depthwise_grouped`; XLA:CPU fuses it into
  one loop instead of calling its slow grouped-convolution kernel.
  """
  _, h, w, _ = x.shape
  ho = (h + 2 - 3) // stride + 1
  wo = (w + 2 - 3) // stride + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  k = kernel.astype(x.dtype)
  out = None
  for i in range(3):
    for j in range(3):
      tap = jax.lax.slice(
          xp, (0, i, j, 0),
          (xp.shape[0], i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, xp.shape[3]),
          (1, stride, stride, 1))
      term = tap * k[i, j, 0]
      out = term if out is None else out + term
  return out


class DepthwiseConv3x3(nn.Module):
  """3x3 depthwise conv, padding 1, no bias; kernel param (3, 3, 1, C)."""
  stride: int = 1
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel = self.param('kernel', _conv_init, (3, 3, 1, c), jnp.float32)
    impl = resolve_depthwise(self.impl)
    if impl == 'shifted':
      # Same forward as depthwise_shifted; its custom VJP avoids materialising
      # the nine shifted inputs in the backward pass (benchmarks/README.md).
      return layers.depthwise3x3(x, kernel, self.stride)
    return depthwise_grouped(x, kernel, self.stride)


def _bn_relu(train, name, fused, dtype=jnp.float32):
  return layers.batch_norm(train, name, fused, relu=True, momentum=BN_MOMENTUM,
                           epsilon=BN_EPS, dtype=dtype)


class DepthWiseBlock(nn.Module):
  """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU (3DDFA_V2's block)."""
  features: int
  stride: int = 1
  depthwise: str = 'auto'
  fused_bn: bool = True
  dot_dtype: object = None
  dtype: object = jnp.float32  # activations (parameters stay float32)

  @nn.compact
  def __call__(self, x, train: bool = False):
    cpu = resolve_depthwise(self.depthwise) == 'shifted'
    x = DepthwiseConv3x3(self.stride, self.depthwise, name='conv_dw')(x)
    x = _bn_relu(train, 'bn_dw', self.fused_bn, self.dtype)(x)
    if cpu:  # a plain matrix product
      x = layers.PointwiseConv(self.features, _conv_init, self.dot_dtype, name='conv_sep')(x)
    else:
      x = nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=_conv_init,
                  dtype=self.dtype, name='conv_sep')(x)
    return _bn_relu(train, 'bn_sep', self.fused_bn, self.dtype)(x)


def channels(width: float) -> Sequence[int]:
  """Output channels of the stem and the 13 blocks at this widen factor."""
  return [int(STEM_CHANNELS * width)] + [int(c * width) for _, c, _ in BLOCKS]


class MobileNetV1(nn.Module):
  """3DDFA_V2's MobileNetV1 regressor.

  Call with x (B, H, W, 3 or 4) float32 (normalised BGR, plus the FLM channel
  for 4-channel models) -> (B, num_outputs). ``train`` switches batch norm to
  batch statistics (pass ``mutable=['batch_stats']``).
  """
  width: float = 1.0
  num_outputs: int = 62
  depthwise: str = 'auto'
  # BN + ReLU as one layers.BatchNorm (custom VJP: fewer full-size temporaries;
  # MobileNet x0.5 training 13% faster on XLA:CPU, benchmarks/README.md).
  fused_bn: bool = True
  # CPU ('shifted') path: operand dtype of the stem and 1x1 matrix products
  # (None: float32; 'bfloat16': bf16 operands, float32 sums, see layers._matmul).
  dot_dtype: object = None
  # Activation (compute) dtype: float32 or bfloat16 (mixed precision for accelerators).
  # Parameters and batch-norm statistics stay float32; the output is always float32.
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim != 4 or x.shape[-1] not in (3, 4):
      raise DaslError(f'MobileNetV1 expects (B, H, W, 3 or 4) input, got {x.shape}')
    chans = channels(self.width)
    cpu = resolve_depthwise(self.depthwise) == 'shifted'
    x = x.astype(self.dtype)
    if cpu:  # patches times a matrix
      x = layers.Conv3x3(chans[0], 2, _conv_init, self.dot_dtype, name='conv1')(x)
    else:
      x = nn.Conv(chans[0], (3, 3), strides=(2, 2), padding=PAD1, use_bias=False,
                  kernel_init=_conv_init, dtype=self.dtype, name='conv1')(x)
    x = _bn_relu(train, 'bn1', self.fused_bn, self.dtype)(x)
    for (name, _, stride), c in zip(BLOCKS, chans[1:]):
      x = DepthWiseBlock(c, stride, self.depthwise, self.fused_bn, self.dot_dtype,
                         self.dtype, name=name)(x, train)
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    # The losses see float32 whatever the compute dtype.
    return nn.Dense(self.num_outputs, dtype=self.dtype, name='fc_param')(x).astype(jnp.float32)


def torch_state_dict_shapes(width: float, in_channels: int = 3, num_outputs: int = 62):
  """Shapes of 3DDFA_V2's PyTorch state dict for this width (fc_lm excluded)."""
  chans = channels(width)
  shapes = {'conv1.weight': (chans[0], in_channels, 3, 3)}

  def bn(prefix, c):
    for k in ('weight', 'bias', 'running_mean', 'running_var'):
      shapes[f'{prefix}.{k}'] = (c,)

  bn('bn1', chans[0])
  c_in = chans[0]
  for (name, _, _), c in zip(BLOCKS, chans[1:]):
    shapes[f'{name}.conv_dw.weight'] = (c_in, 1, 3, 3)
    bn(f'{name}.bn_dw', c_in)
    shapes[f'{name}.conv_sep.weight'] = (c, c_in, 1, 1)
    bn(f'{name}.bn_sep', c)
    c_in = c
  shapes['fc_param.weight'] = (num_outputs, c_in)
  shapes['fc_param.bias'] = (num_outputs,)
  return shapes


def variables_from_torch(state_dict, width: float, in_channels: int = 3,
                         num_outputs: int = 62, source: str = 'state dict'):
  """3DDFA_V2 MobileNetV1 state dict (numpy) -> Flax ``{'params', 'batch_stats'}``.

  Conv weights OIHW -> HWIO (depthwise (C, 1, 3, 3) -> (3, 3, 1, C)); BN
  weight/bias -> params scale/bias, running_mean/var -> batch_stats mean/var;
  ``fc_param`` -> Dense (kernel transposed). ``fc_lm`` (an unused auxiliary
  head) and ``num_batches_tracked`` are dropped. With ``in_channels=4`` a
  3-channel first conv is widened with zero weights on the 4th (FLM) channel,
  so the model computes the same function until trained.

  Raises DaslError naming the key when a tensor is missing, unexpected or of
  another shape (another architecture or width).
  """
  sd = torch_state.clean(state_dict, drop=('fc_lm.',))
  stored_in = torch_state.stored_in_channels(sd, in_channels, source)
  torch_state.check(sd, torch_state_dict_shapes(width, stored_in, num_outputs),
                    f'3DDFA_V2 MobileNetV1 width {width}', source)
  params, stats = {}, {}

  def bn(prefix, dst_p, dst_s):
    dst_p['scale'] = sd[f'{prefix}.weight']
    dst_p['bias'] = sd[f'{prefix}.bias']
    dst_s['mean'] = sd[f'{prefix}.running_mean']
    dst_s['var'] = sd[f'{prefix}.running_var']

  k1 = torch_state.widen_first_conv(sd['conv1.weight'].transpose(2, 3, 1, 0), in_channels)
  params['conv1'] = {'kernel': k1}
  params['bn1'], stats['bn1'] = {}, {}
  bn('bn1', params['bn1'], stats['bn1'])
  for name, _, _ in BLOCKS:
    p = {'conv_dw': {'kernel': sd[f'{name}.conv_dw.weight'].transpose(2, 3, 1, 0)},
         'conv_sep': {'kernel': sd[f'{name}.conv_sep.weight'].transpose(2, 3, 1, 0)},
         'bn_dw': {}, 'bn_sep': {}}
    s = {'bn_dw': {}, 'bn_sep': {}}
    bn(f'{name}.bn_dw', p['bn_dw'], s['bn_dw'])
    bn(f'{name}.bn_sep', p['bn_sep'], s['bn_sep'])
    params[name], stats[name] = p, s
  params['fc_param'] = {'kernel': sd['fc_param.weight'].T, 'bias': sd['fc_param.bias']}
  cast = lambda t: jax.tree_util.tree_map(lambda a: np.ascontiguousarray(a, np.float32), t)
  return {'params': cast(params), 'batch_stats': cast(stats)}
