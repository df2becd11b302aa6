"""Drop-in ops of dasl_jax.models.layers against lax.conv, tune_malloc, and a benchmarks.run smoke run.

The references are XLA's own convolutions (``lax.conv_general_dilated``, grouped
for depthwise), independent of the shifted / matrix-product formulations tested.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.models import layers

ROOT = Path(__file__).resolve().parents[1]
DN = ('NHWC', 'HWIO', 'NHWC')


def _conv(x, k, stride, pad, groups=1):
  return jax.lax.conv_general_dilated(x, k, (stride, stride), pad, dimension_numbers=DN,
                                      feature_group_count=groups,
                                      precision=jax.lax.Precision.HIGHEST)


def _check(fn, ref, x, k, rtol=2e-5):
  """Outputs and both gradients of sum(out * r) agree."""
  rng = np.random.default_rng(1)
  y_ref = ref(x, k)
  r = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
  y = fn(x, k)
  assert y.shape == y_ref.shape
  scale = float(jnp.abs(y_ref).max())
  np.testing.assert_allclose(y, y_ref, atol=rtol * scale, rtol=0)
  g = jax.grad(lambda x, k: jnp.sum(fn(x, k) * r), (0, 1))(x, k)
  g_ref = jax.grad(lambda x, k: jnp.sum(ref(x, k) * r), (0, 1))(x, k)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, atol=rtol * float(jnp.abs(b).max()), rtol=0)


@pytest.mark.parametrize('h,w,stride', [(12, 12, 1), (12, 12, 2), (15, 14, 2), (7, 9, 1)])
def test_depthwise3x3_matches_grouped_conv(h, w, stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, h, w, 5)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 1, 5)), jnp.float32)
  _check(lambda x, k: layers.depthwise3x3(x, k, stride),
         lambda x, k: _conv(x, k, stride, layers.PAD1, groups=5), x, k)


def test_pointwise_matches_1x1_conv():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 6, 7, 5)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 5, 8)), jnp.float32)
  _check(layers.pointwise, lambda x, k: _conv(x, k, 1, 'VALID'), x, k)


@pytest.mark.parametrize('stride', [1, 2])
def test_conv3x3_patches_matches_conv(stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 10, 11, 4)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 4, 6)), jnp.float32)
  _check(lambda x, k: layers.conv3x3_patches(x, k, stride),
         lambda x, k: _conv(x, k, stride, layers.PAD1), x, k)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='mallopt is glibc (Linux) only')
def test_tune_malloc_applies_on_linux():
  code = ('from dasl_jax import cpu_runtime; a = cpu_runtime.tune_malloc(); '
          'b = cpu_runtime.tune_malloc(); print(a, b)')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       check=True)
  assert out.stdout.split() == ['True', 'True']


_FAULTS = """
import ctypes, resource, sys
from dasl_jax import cpu_runtime
assert cpu_runtime.tune_malloc()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
n = int(2.25 * 2**30)  # above 2 GiB, the largest positive trim threshold
for _ in range(2):
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  p = libc.malloc(n)
  libc.memset(p, 1, n)
  libc.free(p)
  print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='mallopt is glibc (Linux) only')
def test_tune_malloc_keeps_a_freed_block_over_2gib():
  """A batch-128 step's temporaries exceed 2 GiB: freed, they must stay mapped, so touching
  them again costs no page faults (glibc's default faults all ~590,000 pages again)."""
  out = subprocess.run([sys.executable, '-c', _FAULTS], cwd=ROOT, capture_output=True,
                       text=True, check=True)
  first, second = map(int, out.stdout.split())
  assert first > 500_000  # the first touch faults every 4 KiB page in
  assert second < 1000, (first, second)


def test_run_quick_smoke(tmp_path):
  """The benchmark command end to end on its cheapest part (the full --quick run takes
  minutes on the shared 2-core machine: every network compiles)."""
  out = tmp_path / 'bench.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  p = subprocess.run([sys.executable, '-m', 'benchmarks.run', '--quick', '--parts=inference',
                      '--notorch', f'--json={out}'], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  res = json.loads(out.read_text())
  assert {'machine', 'versions', 'command', 'timestamp'} <= set(res)
  inf = res['inference']
  assert inf['large_batch'] == 8
  assert inf['jax_jit']['batch1_ms'] > 0 and inf['jax_exported']['large_img_per_s'] > 0
  assert inf['max_rel_diff_exported_vs_jit'] < 1e-4
  assert inf['jax_jit_bf16_dots']['large_img_per_s'] > 0
  assert 0 < inf['max_rel_diff_bf16_dots_vs_jit'] < 0.05  # bf16: ~3 significant digits
  assert res['malloc_tuned'] is True and res['maxrss_mb'] > 0


def test_run_rejects_unknown_part():
  p = subprocess.run([sys.executable, '-m', 'benchmarks.run', '--parts=bogus'], cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 2 and 'error: --parts: unknown' in p.stderr


def test_pointwise_bfloat16_operands():
  """dot_dtype=bfloat16: bf16 operands, float32 result and gradients, within bf16 rounding
  of the float32 product (and not identical to it: the cast happens)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 6, 7, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 16, 8)), jnp.float32)
  want = np.einsum('bhwc,cd->bhwd', np.asarray(x, np.float64), np.asarray(k[0, 0], np.float64))
  got = layers.pointwise(x, k, jnp.bfloat16)
  assert got.dtype == jnp.float32
  err = float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())
  assert 1e-5 < err < 2e-2, err
  gx, gk = jax.grad(lambda x, k: jnp.sum(layers.pointwise(x, k, jnp.bfloat16)), (0, 1))(x, k)
  assert gx.dtype == gk.dtype == jnp.float32
  np.testing.assert_allclose(gk, jax.grad(lambda k: jnp.sum(layers.pointwise(x, k)))(k),
                             rtol=0, atol=2e-2 * float(jnp.abs(gk).max()))


@pytest.mark.parametrize('shape,stride', [((2, 12, 12, 3), 2), ((2, 11, 9, 3), 2),
                                          ((1, 7, 7, 2), 1)])
def test_max_pool3x3_matches_flax_max_pool(shape, stride):
  """Output and gradient (ties included: the first maximum in row-major window order
  takes the gradient, as XLA's select-and-scatter does) against nn.max_pool."""
  import flax.linen as nn
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  x = x.at[0, 2, 2, 0].set(x[0, 2, 3, 0]).at[0, 4, 4, 1].set(x[0, 5, 4, 1])  # ties
  ref = lambda x: nn.max_pool(x, (3, 3), (stride, stride), padding=((1, 1), (1, 1)))
  y_ref = ref(x)
  np.testing.assert_array_equal(layers.max_pool3x3(x, stride), y_ref)
  r = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
  g = jax.grad(lambda x: jnp.sum(layers.max_pool3x3(x, stride) * r))(x)
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) * r))(x)
  np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-6)
