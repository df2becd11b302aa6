"""Probe: per-op time of the MobileNetV1 x0.5 training step on XLA:CPU (jax.profiler trace).

  python -m benchmarks.probes.profile_ops [--impl shifted] [--steps 3] [--top 40]

Sums the durations of the XLA ops (thunks) in a perfetto trace of a few steps
and prints the largest, grouped by HLO op name.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

import jax

from benchmarks.probes.mb_train_ab import jax_step_fn, make_module


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--impl', default='shifted')
  ap.add_argument('--width', type=float, default=0.5)
  ap.add_argument('--batch', type=int, default=32)
  ap.add_argument('--steps', type=int, default=3)
  ap.add_argument('--top', type=int, default=40)
  ap.add_argument('--tune_malloc', action='store_true')
  ap.add_argument('--inference', action='store_true',
                  help='profile the benchmark\'s jitted inference (mb05 + landmarks) instead')
  a = ap.parse_args()
  if a.tune_malloc:
    from dasl_jax import cpu_runtime
    cpu_runtime.tune_malloc()
  if a.inference:
    import numpy as np
    from benchmarks import inference as BI
    from dasl_jax import predict_batch
    from dasl_jax.models.mobilenet import MobileNetV1
    variables, stats, model, _ = BI.load_model_inputs()
    fn = predict_batch.make_predict_fn(MobileNetV1(a.width, depthwise=a.impl), stats, model,
                                       'v2', 3)
    img = np.random.default_rng(0).integers(0, 256, (a.batch, 120, 120, 3), dtype=np.uint8)
    pts = np.zeros((a.batch, 18, 2), np.float32)
    v = jax.device_put(variables)
    call = lambda: jax.block_until_ready(fn(v, img, pts))
  else:
    call, _, _ = jax_step_fn(make_module(a.impl, a.width), a.batch)
  call()
  d = tempfile.mkdtemp()
  with jax.profiler.trace(d, create_perfetto_trace=True):
    for _ in range(a.steps):
      call()
  f = glob.glob(os.path.join(d, '**', '*.trace.json.gz'), recursive=True)[0]
  ev = json.load(gzip.open(f))
  ev = ev['traceEvents'] if isinstance(ev, dict) else ev
  tot = collections.Counter()
  cnt = collections.Counter()
  threads = collections.Counter()
  for e in ev:
    if e.get('ph') == 'X' and 'dur' in e:
      tot[e['name']] += e['dur']
      cnt[e['name']] += 1
      threads[(e.get('pid'), e.get('tid'))] += e['dur']
  print('trace', f)
  for name, us in tot.most_common(a.top):
    print(f'{us / a.steps / 1e3:9.2f} ms/step  x{cnt[name] // a.steps:4d}  {name[:110]}')
  cat = collections.Counter()
  for name, us in tot.items():
    if cnt[name] <= 2 * a.steps and not name.startswith(('$', 'Thunk')):
      cat[re.sub(r'\.\d+$', '', name)] += us
  print('by category (ms/step):')
  for name, us in cat.most_common(25):
    print(f'{us / a.steps / 1e3:9.2f}  {name}')
  print('sum of ops', round(sum(cat.values()) / a.steps / 1e3, 1))
  print('per thread (ms/step):', {k: round(v / a.steps / 1e3, 1) for k, v in threads.most_common(8)})


if __name__ == '__main__':
  main()
