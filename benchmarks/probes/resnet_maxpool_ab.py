"""Probe: ResNet-50 training step with nn.max_pool vs layers.max_pool3x3, interleaved A/B.

  python -m benchmarks.probes.resnet_maxpool_ab [--rounds 5] [--batch 32]
"""
import argparse
import time

import flax.linen as nn
import numpy as np

from dasl_jax import cpu_runtime


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--rounds', type=int, default=5)
  ap.add_argument('--batch', type=int, default=32)
  a = ap.parse_args()
  cpu_runtime.tune_malloc()
  from benchmarks.probes.mb_train_ab import jax_step_fn
  from dasl_jax.models import layers
  from dasl_jax.models import resnet as rn
  ours = layers.max_pool3x3
  flax_pool = lambda x, s: nn.max_pool(x, (3, 3), (s, s), padding=((1, 1), (1, 1)))
  fns = {}
  for name, pool in (('nn_max_pool', flax_pool), ('max_pool3x3', ours)):
    layers.max_pool3x3 = pool  # read when the step is traced (its first call)
    fns[name] = jax_step_fn(rn.ResNet(50), a.batch)[0]
  layers.max_pool3x3 = ours
  times = {k: [] for k in fns}
  for _ in range(a.rounds):
    for k, f in fns.items():
      t0 = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t0)
  for k, v in times.items():
    print(f'{k}: {a.batch / np.median(v):.2f} img/s')


if __name__ == '__main__':
  main()
