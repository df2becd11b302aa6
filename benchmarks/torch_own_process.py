"""PyTorch's supervised step alone, in a fresh process (glibc's default malloc).

  python -m benchmarks.torch_own_process --arch mobilenet --width 0.5 --batch 32 \
      [--rounds 6] [--threads 2]

``benchmarks.run`` calls ``dasl_jax.cpu_runtime.tune_malloc()`` for its own
process, which also changes how PyTorch allocates there; this is PyTorch as a
user runs it. Prints one JSON line: median and min seconds per step.
"""
import argparse
import json
import os
import time


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--arch', default='mobilenet')
  ap.add_argument('--width', type=float, default=0.5)
  ap.add_argument('--batch', type=int, default=32)
  ap.add_argument('--rounds', type=int, default=6)
  ap.add_argument('--threads', type=int, default=0)
  a = ap.parse_args()
  import numpy as np
  from benchmarks import torch_reference as tr
  tr.set_threads(a.threads or len(os.sched_getaffinity(0)))
  step = tr.make_train_step(tr.build(a.arch, a.width, 4))
  x, t, w = tr.train_inputs(a.batch)
  step(x, t, w)
  times = []
  for _ in range(a.rounds):
    t0 = time.perf_counter()
    step(x, t, w)
    times.append(time.perf_counter() - t0)
  print(json.dumps({'median_s': float(np.median(times)), 'min_s': float(np.min(times)),
                    'rounds': a.rounds}))


if __name__ == '__main__':
  main()
