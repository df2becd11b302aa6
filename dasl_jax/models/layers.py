"""Faster drop-in ops for training on XLA:CPU (same parameters, same function).

What the profile of MobileNetV1 x0.5 training (batch 32) on XLA:CPU showed,
and what each op here changes (benchmarks/README.md has the measurements):

* Depthwise 3x3 (``depthwise3x3``): in autodiff of the shifted form, the
  backward pass recomputes BN + ReLU + pad + slice of the layer's input into a
  full-size buffer for each of the nine taps (``pad_slice_fusion``: 37% of the
  step's op time, the largest item). The custom VJP here computes the input
  gradient as a shifted correlation of the output gradient (spread to the
  stride with zeros) with the flipped taps, one fused loop, and the kernel
  gradient as nine multiply-reductions against the saved input.
* Pointwise 1x1 convolution (``pointwise``): as a ``lax.conv`` its kernel
  gradient is a convolution that XLA:CPU runs after transposing the activations
  to a batch-last layout; as a matrix product on ``(N, C)`` rows both gradients
  are plain dots.
* The stem 3x3 convolution (``conv3x3_patches``): the same kernel-gradient
  transposes; as patches (nine shifted slices concatenated on channels) times
  a ``(9 C_in, C_out)`` matrix it is one dot forward and one dot backward (no
  input gradient is needed: the input is data).

* Batch norm in training mode (``batch_norm_train``, ``BatchNorm``): autodiff
  of Flax's BatchNorm (+ ReLU) writes the centred input in the forward pass and
  three more full-size temporaries in the backward pass (masked gradient,
  scaled gradient, the input gradient's pieces). The custom VJP here keeps only
  the layer's input: the backward pass is two reductions over (input, output
  gradient) and one elementwise pass that writes the input gradient, with the
  ReLU mask recomputed from the input.
* 3x3 max pooling (``max_pool3x3``, ResNet's stem): the maximum of nine
  strided slices, and a backward pass that routes each gradient to its
  window's first maximum in one fused loop instead of XLA:CPU's
  select-and-scatter (ResNet-50 training 6.5% faster).

Backends: these forms are measured wins on XLA:CPU only. The networks pick them
where :func:`cpu_backend` is true (JAX's default backend is the CPU) and the
standard Flax/lax ops elsewhere (docs/ARCHITECTURE.md, "Backends"); every form
also lowers for GPU and TPU (tests/training/test_lowering.py).

Every op takes the kernel in ``lax.conv``'s HWIO layout, so checkpoints and the
PyTorch converter are unchanged. tests/test_benchmarks_run.py checks outputs
and gradients against ``lax.conv_general_dilated``.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

PAD1 = ((1, 1), (1, 1))


def cpu_backend() -> bool:
  """True when JAX's default backend is the CPU: then the networks use the CPU forms
  of this module (read when a network is traced, so one place decides)."""
  return jax.default_backend() == 'cpu'


def _out_size(n, stride):
  return (n + 2 - 3) // stride + 1


def _taps(xp, ho, wo, stride):
  """The nine (B, ho, wo, C) strided views of the padded input, row-major (i, j)."""
  b, _, _, c = xp.shape
  return [jax.lax.slice(xp, (0, i, j, 0),
                        (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                        (1, stride, stride, 1))
          for i in range(3) for j in range(3)]


def _dw_forward(x, kernel, stride, pad_once=False):
  _, h, w, _ = x.shape
  ho, wo = _out_size(h, stride), _out_size(w, stride)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  if pad_once:
    # The padded input written once (a fusion boundary; same values): otherwise XLA fuses
    # the padding and the previous layer's BN + ReLU into the nine taps, recomputed (with
    # a bounds check) for every tap. mb05 inference at batch 1, interleaved with the
    # fused form on a 2-core Zen 3: 1.5% to 15% faster over four runs, batch 128 +1% to
    # +2.4% (benchmarks/onnx_variants.py).
    # Training keeps the fused form (``_dw_fwd``), where the backward pass needs x only.
    xp = jax.lax.optimization_barrier(xp)
  k = kernel.astype(x.dtype).reshape(9, -1)
  out = None
  for t, tap in enumerate(_taps(xp, ho, wo, stride)):
    term = tap * k[t]
    out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise3x3(x, kernel, stride):
  """Depthwise 3x3 convolution, padding 1, no bias (PyTorch's ``groups=C``).

  Args:
    x: (B, H, W, C); kernel: (3, 3, 1, C) (HWIO of a grouped ``lax.conv``);
    stride: 1 or 2 (static).
  Returns:
    (B, Ho, Wo, C), Ho = (H - 1) // stride + 1.
  """
  return _dw_forward(x, kernel, stride, pad_once=True)  # the primal: not differentiated


def _dw_fwd(x, kernel, stride):
  return _dw_forward(x, kernel, stride), (x, kernel)


def _dw_bwd(stride, res, dy):
  x, kernel = res
  _, h, w, c = x.shape
  ho, wo = dy.shape[1], dy.shape[2]
  k = kernel.astype(dy.dtype).reshape(9, c)
  # Input gradient: out[p] = sum_i xp[s p + i] k[i], so dxp[q] = sum_i dy_s[q - i] k[i]
  # with dy_s the output gradient spread to stride s (zeros between); as a
  # correlation with the flipped taps on dy_s padded by one, cropped to x.
  zero = jnp.zeros((), dy.dtype)
  dyp = jax.lax.pad(dy, zero, ((0, 0, 0), (1, h - stride * (ho - 1), stride - 1),
                               (1, w - stride * (wo - 1), stride - 1), (0, 0, 0)))
  dx = None
  for t, tap in enumerate(_taps(dyp, h, w, 1)):
    term = tap * k[8 - t]
    dx = term if dx is None else dx + term
  # Kernel gradient: nine multiply-reductions over (B, Ho, Wo). As einsums XLA:CPU
  # hands them to its library fusion; one stacked (9, ...) reduction was slower
  # (probe dw_grad_micro, benchmarks/README.md).
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # float32 sums also for bfloat16 activations (a sum over B*H*W terms).
  dk = jnp.stack([jnp.einsum('bhwc,bhwc->c', tap, dy, preferred_element_type=jnp.float32)
                  for tap in _taps(xp, ho, wo, stride)])
  dk = dk.reshape(3, 3, 1, c).astype(kernel.dtype)
  return dx.astype(x.dtype), dk


depthwise3x3.defvjp(_dw_fwd, _dw_bwd)


def _matmul(a, b, dot_dtype):
  """a @ b in a's dtype, or with both operands cast to ``dot_dtype`` (e.g. bfloat16:
  ~1.7x the f32 rate on CPUs with AVX512-BF16) and the products summed in float32."""
  if dot_dtype is None:
    return jnp.dot(a, b.astype(a.dtype))
  return jnp.dot(a.astype(dot_dtype), b.astype(dot_dtype),
                 preferred_element_type=jnp.float32).astype(a.dtype)


def pointwise(x, kernel, dot_dtype=None):
  """1x1 convolution as a matrix product: x (B, H, W, Cin), kernel (1, 1, Cin, Cout).

  ``dot_dtype``: None (x's dtype) or the operand dtype of the product (see _matmul).
  """
  b, h, w, cin = x.shape
  y = _matmul(x.reshape(b * h * w, cin), kernel.reshape(cin, -1), dot_dtype)
  return y.reshape(b, h, w, -1)


def conv3x3_patches(x, kernel, stride, dot_dtype=None):
  """3x3 convolution, padding 1, no bias, as patches times a matrix.

  Args:
    x: (B, H, W, Cin); kernel: (3, 3, Cin, Cout) HWIO; stride: static int;
    dot_dtype: as for :func:`pointwise`.
  Returns:
    (B, Ho, Wo, Cout), the same as ``lax.conv_general_dilated`` with padding 1.
  """
  b, h, w, cin = x.shape
  ho, wo = _out_size(h, stride), _out_size(w, stride)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate(_taps(xp, ho, wo, stride), axis=-1)  # (B, ho, wo, 9 Cin), (i, j, c)
  y = _matmul(patches.reshape(b * ho * wo, 9 * cin), kernel.reshape(9 * cin, -1), dot_dtype)
  return y.reshape(b, ho, wo, -1)


class DepthwiseConv3x3(nn.Module):
  """Drop-in for ``mobilenet.DepthwiseConv3x3`` (param 'kernel' (3, 3, 1, C))."""
  stride: int = 1
  kernel_init: object = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (3, 3, 1, x.shape[-1]), jnp.float32)
    return depthwise3x3(x, kernel, self.stride)


class PointwiseConv(nn.Module):
  """Drop-in for ``nn.Conv(features, (1, 1), use_bias=False)`` (param 'kernel' (1, 1, Cin, Cout))."""
  features: int
  kernel_init: object = nn.initializers.lecun_normal()
  dot_dtype: object = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (1, 1, x.shape[-1], self.features),
                        jnp.float32)
    return pointwise(x, kernel, self.dot_dtype)


class Conv3x3(nn.Module):
  """Drop-in for ``nn.Conv(features, (3, 3), strides, padding=1, use_bias=False)``."""
  features: int
  stride: int = 1
  kernel_init: object = nn.initializers.lecun_normal()
  dot_dtype: object = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (3, 3, x.shape[-1], self.features),
                        jnp.float32)
    return conv3x3_patches(x, kernel, self.stride, self.dot_dtype)


def _bn_stats(x, axes):
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = jnp.mean(xf, axes)
  # Flax's fast variance (E[x^2] - E[x]^2, clipped at 0), so running statistics
  # and outputs match nn.BatchNorm.
  var = jnp.maximum(0.0, jnp.mean(xf * xf, axes) - mean * mean)
  return mean, var


def _bn_apply(x, scale, bias, mean, var, eps, relu):
  a = scale * jax.lax.rsqrt(var + eps)
  y = (x - mean.astype(x.dtype)) * a.astype(x.dtype) + bias.astype(x.dtype)
  return jnp.maximum(y, 0) if relu else y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, eps, relu):
  """Batch norm with batch statistics over all axes but the last, optionally + ReLU.

  Args:
    x: (..., C); scale, bias: (C,) float32; eps: float; relu: bool (static).
  Returns:
    (y, mean, var): y like x (``relu(scale (x - mean) / sqrt(var + eps) + bias)``),
    mean and var (C,) float32, the biased batch statistics (what Flax's
    BatchNorm normalises with and feeds to its running averages).
  """
  return _bn_train_fwd(x, scale, bias, eps, relu)[0]


def _bn_train_fwd(x, scale, bias, eps, relu):
  axes = tuple(range(x.ndim - 1))
  mean, var = _bn_stats(x, axes)
  return (_bn_apply(x, scale, bias, mean, var, eps, relu), mean, var), (x, scale, bias, mean, var)


def _bn_train_bwd(eps, relu, res, cts):
  x, scale, bias, mean, var = res
  dy, dmean, dvar = cts
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  ft = mean.dtype
  rstd = jax.lax.rsqrt(var + eps)
  a = scale * rstd
  xf = x.astype(ft)
  dz = dy.astype(ft)
  if relu:
    dz = jnp.where((xf - mean) * a + bias > 0, dz, 0)
  s1 = jnp.sum(dz, axes)
  s2 = jnp.sum(dz * xf, axes)
  dbias = s1
  dscale = rstd * (s2 - mean * s1)  # sum(dz * xhat)
  # d/dx of the normalised output, plus the (usually zero) cotangents of the
  # returned statistics: d mean / dx = 1/n, d var / dx = 2 (x - mean) / n.
  c_xhat = a * rstd * dscale / n
  dx = (a * dz - a * s1 / n - (xf - mean) * c_xhat
        + dmean / n + (xf - mean) * (2.0 * dvar / n))
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


batch_norm_train.defvjp(_bn_train_fwd, _bn_train_bwd)


class BatchNorm(nn.Module):
  """Drop-in for ``nn.BatchNorm`` (+ an optional fused ReLU) with the custom-VJP training path.

  Same variables as ``nn.BatchNorm`` (params 'scale', 'bias'; batch_stats
  'mean', 'var') and the same running-average update (``momentum`` is the
  weight of the old value, no Bessel correction), so checkpoints interchange.
  Statistics are over all axes but the last; under ``jit`` with a sharded
  batch XLA makes them global, as for ``nn.BatchNorm`` without ``axis_name``.
  """
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  relu: bool = False

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
    if self.use_running_average:
      return _bn_apply(x, scale, bias, ra_mean.value, ra_var.value, self.epsilon, self.relu)
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, self.relu)
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
      ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
    return y


def _maxpool_taps(x, stride):
  _, h, w, _ = x.shape
  ho, wo = _out_size(h, stride), _out_size(w, stride)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  return _taps(xp, ho, wo, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool3x3(x, stride):
  """3x3 max pooling, padding 1 (with -inf), as the maximum of nine strided slices.

  ``nn.max_pool(x, (3, 3), (s, s), padding=((1, 1), (1, 1)))``; its autodiff on
  XLA:CPU is a reduce-window forward and a select-and-scatter backward. Here
  the backward pass gives each output's gradient to the first maximal tap in
  row-major window order (select-and-scatter's choice on ties), spread back
  to the input with interior padding, one fused loop.

  Args:
    x: (B, H, W, C); stride: static int.
  Returns:
    (B, Ho, Wo, C), Ho = (H - 1) // stride + 1.
  """
  return functools.reduce(jnp.maximum, _maxpool_taps(x, stride))


def _mp_fwd(x, stride):
  y = max_pool3x3(x, stride)
  return y, (x, y)


def _mp_bwd(stride, res, dy):
  x, y = res
  _, h, w, _ = x.shape
  ho, wo = y.shape[1], y.shape[2]
  zero = jnp.zeros((), dy.dtype)
  taken = jnp.zeros(y.shape, bool)
  dxp = None
  for t, tap in enumerate(_maxpool_taps(x, stride)):
    i, j = divmod(t, 3)
    hit = (tap == y) & ~taken
    taken = taken | hit
    g = jnp.where(hit, dy, zero)
    # Output (p, q) of tap (i, j) read padded input (s p + i, s q + j).
    g = jax.lax.pad(g, zero, ((0, 0, 0), (i, h + 2 - i - stride * (ho - 1) - 1, stride - 1),
                              (j, w + 2 - j - stride * (wo - 1) - 1, stride - 1), (0, 0, 0)))
    dxp = g if dxp is None else dxp + g
  return (dxp[:, 1:h + 1, 1:w + 1],)


max_pool3x3.defvjp(_mp_fwd, _mp_bwd)


def stem_max_pool(x, stride):
  """3x3 max pooling, padding 1 (ResNet's stem): :func:`max_pool3x3` on the CPU
  backend, ``nn.max_pool`` (reduce_window) elsewhere. Same function."""
  if cpu_backend():
    return max_pool3x3(x, stride)
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=PAD1)


def batch_norm(train, name, fused=True, relu=False, momentum=0.9, epsilon=1e-5,
               dtype=jnp.float32):
  """The networks' BN (+ ReLU) callable: ``BatchNorm`` above if ``fused`` and the
  backend is the CPU, else ``nn.BatchNorm`` (then ``nn.relu``). Same variables
  either way; ``momentum`` is Flax's (0.9 = PyTorch's 0.1). ``dtype``: the output
  (activation) dtype; statistics, scale and bias are float32 in both forms."""
  if fused and cpu_backend():
    # Follows its input's dtype; statistics in float32 (_bn_stats).
    return BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                     relu=relu, name=name)
  # Flax computes the batch statistics in float32 for a bfloat16 dtype.
  bn = nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                    dtype=dtype, param_dtype=jnp.float32, name=name)
  return (lambda x: nn.relu(bn(x))) if relu else bn
