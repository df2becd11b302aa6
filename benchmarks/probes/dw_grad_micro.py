"""Probe: one depthwise layer's VJP, formulations of the kernel gradient, interleaved A/B.

  python -m benchmarks.probes.dw_grad_micro
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.models import layers as L
from dasl_jax.models import mobilenet as mb


def dk_stack(x, dy, s):
  ho, wo = dy.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.sum(jnp.stack([t * dy for t in L._taps(xp, ho, wo, s)]), axis=(1, 2, 3))


def dk_sep(x, dy, s):
  ho, wo = dy.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack([jnp.sum(t * dy, axis=(0, 1, 2)) for t in L._taps(xp, ho, wo, s)])


def dk_einsum(x, dy, s):
  ho, wo = dy.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack([jnp.einsum('bhwc,bhwc->c', t, dy) for t in L._taps(xp, ho, wo, s)])


def dk_rows(x, dy, s):
  """Reduce over W inside, then over (B, H): two-stage, the first over small rows."""
  ho, wo = dy.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack([jnp.sum(jnp.sum(t * dy, axis=2), axis=(0, 1)) for t in L._taps(xp, ho, wo, s)])


def main():
  rng = np.random.default_rng(0)
  cases = [(32, 60, 16, 1), (32, 60, 32, 2), (32, 15, 128, 1)]
  fns = {}
  for (b, h, c, s) in cases:
    x = jnp.asarray(rng.normal(size=(b, h, h, c)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 1, c)), jnp.float32)
    ho = (h - 1) // s + 1
    dy = jnp.asarray(rng.normal(size=(b, ho, ho, c)), jnp.float32)
    ref = lambda x, k, dy=dy, s=s: jax.vjp(lambda x, k: mb.depthwise_shifted(x, k, s), x, k)[1](dy)[1]
    fns[(h, c, s, 'autodiff_dk')] = (jax.jit(ref), (x, k))
    for name, f in [('stack', dk_stack), ('sep', dk_sep), ('einsum', dk_einsum), ('rows', dk_rows)]:
      fns[(h, c, s, name)] = (jax.jit(lambda x, dy, f=f, s=s: f(x, dy, s)), (x, dy))
      fns[(h, c, s, name + '_noynnreduce')] = (
          jax.jit(lambda x, dy, f=f, s=s: f(x, dy, s),
                  compiler_options={'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT'}), (x, dy))
  for f, a in fns.values():
    jax.block_until_ready(f(*a))
  times = {k: [] for k in fns}
  for _ in range(7):
    for k, (f, a) in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(*a))
      times[k].append(time.perf_counter() - t0)
  for k, v in times.items():
    print(k, f'{np.median(v) * 1e3:.2f} ms')


if __name__ == '__main__':
  main()
