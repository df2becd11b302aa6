"""benchmarks.jax_cpu_profile times what the package runs: its hand-written forward
equals MobileNetV1's features, and its FFI product (``--ffi``) equals numpy's.

Slow tier: benchmark-only code (one network and one small FFI program compiled, and a
g++ build), not a path users run."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import jax_cpu_profile as prof
from dasl_jax.models.mobilenet import MobileNetV1

pytestmark = pytest.mark.slow


def _variables():
  shapes = jax.eval_shape(MobileNetV1(0.5).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 120, 120, 3)))
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map_with_path(
      lambda path, s: (0.5 + rng.random(s.shape) if getattr(path[-1], 'key', '') in ('var', 'scale')
                       else 0.1 * rng.normal(size=s.shape)).astype(np.float32), shapes)


def test_forward_is_the_networks_features():
  v = _variables()
  img = np.random.default_rng(1).integers(0, 256, (2, 120, 120, 3), np.uint8)
  feats = jax.jit(lambda x: prof.forward(v, x))(img)
  fc = v['params']['fc_param']
  got = np.asarray(feats) @ np.asarray(fc['kernel']) + np.asarray(fc['bias'])
  # The reference: the package's network, XLA's grouped depthwise and nn.Conv (not the
  # CPU forms the benchmark writes out).
  ref = MobileNetV1(0.5, depthwise='grouped').apply(v, img.astype(np.float32))
  np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4 * float(np.abs(ref).max()))


@pytest.mark.skipif(shutil.which('g++') is None, reason='g++ not installed: --ffi needs it')
def test_ffi_product_matches_numpy():
  target, _ = prof._build_ffi()
  rng = np.random.default_rng(2)
  a = rng.normal(size=(37, 24)).astype(np.float32)
  b = rng.normal(size=(24, 19)).astype(np.float32)
  s = rng.normal(size=19).astype(np.float32)
  out = jax.ShapeDtypeStruct((37, 19), jnp.float32)
  for relu in (True, False):
    y = jax.jit(lambda a, b, s, relu=relu: jax.ffi.ffi_call(target, out)(a, b, s, relu=relu))(a, b, s)
    ref = a.astype(np.float64) @ b + s
    np.testing.assert_allclose(y, np.maximum(ref, 0) if relu else ref, rtol=1e-5, atol=1e-5)
