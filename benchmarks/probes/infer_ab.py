"""Probe: MobileNetV1 x0.5 4-ch forward (inference), project model vs layers variant vs PyTorch.

  python -m benchmarks.probes.infer_ab [--batch 128] [--rounds 8] [--torch_threads 1]
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax import cpu_runtime


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--batch', type=int, default=128)
  ap.add_argument('--rounds', type=int, default=8)
  ap.add_argument('--torch_threads', type=int, default=1)
  a = ap.parse_args()
  cpu_runtime.tune_malloc()
  from benchmarks.probes.fast_mobilenet import MobileNetV1Fast
  from dasl_jax.models.mobilenet import MobileNetV1
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(a.batch, 120, 120, 4)), jnp.float32)
  fns = {}
  for name, m in (('jax', MobileNetV1(0.5)), ('jax_layers', MobileNetV1Fast(0.5))):
    v = jax.jit(lambda k, m=m: m.init(k, x[:1]))(jax.random.key(0, impl='rbg'))
    f = jax.jit(lambda v, x, m=m: m.apply(v, x))
    fns[name] = lambda f=f, v=v: f(v, x).block_until_ready()
  from benchmarks import torch_reference as tr
  tr.set_threads(a.torch_threads)
  pred = tr.make_predict(tr.mobilenet_v1(0.5, 4))
  xi = rng.integers(0, 256, (a.batch, 120, 120, 4), dtype=np.uint8)
  fns['torch'] = lambda: pred(xi)
  for f in fns.values():
    f()
  ts = {k: [] for k in fns}
  for _ in range(a.rounds):
    for k, f in fns.items():
      t0 = time.perf_counter()
      f()
      ts[k].append(time.perf_counter() - t0)
  med = {k: float(np.median(v)) for k, v in ts.items()}
  for k, m in med.items():
    print(f'{k}: {a.batch / m:.0f} img/s  ({med["torch"] / m:.2f}x torch)')


if __name__ == '__main__':
  main()
