"""Input pipeline speed against the train step's consumption, on this machine.

  python -m benchmarks.pipeline [--json OUT] [--quick] [--opencv_ab_rounds N [--only_opencv_ab]]

Measures examples/s of (a) the default synthetic streams (3D + wild, default
config.data: batches 8 + 8, Grain threads, augmentation on), (b) the aflw-wild
stream when the assets are present, (c) single-thread per-example costs
(source read, augmentation), and (d) the examples/s the default train step
consumes (``dasl_jax.training.step.CompiledStep`` with ``dasl_jax.training.config``
defaults, built as training builds it). The pipeline keeps up when (a) > (d). ``--opencv_ab_rounds N``: the aflw-wild
stream with OpenCV at one thread (``data.opencv_threads=1``) vs OpenCV's own pool
(the default), interleaved. The machine is shared: the load average is recorded
with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import common


def _rate(next_fn, n_batches, examples_per_batch, warmup):
  for _ in range(warmup):
    next_fn()
  t0 = time.perf_counter()
  for _ in range(n_batches):
    next_fn()
  dt = time.perf_counter() - t0
  return {'examples_per_s': n_batches * examples_per_batch / dt, 'batches': n_batches,
          'seconds': dt}


def _per_example_ms(fn, n):
  t0 = time.perf_counter()
  for i in range(n):
    fn(i)
  return (time.perf_counter() - t0) / n * 1e3


def bench_synthetic(quick):
  from dasl_jax.data import build_data
  from dasl_jax.data import augment as AUG
  from dasl_jax.data.config import data_config
  c = data_config()
  if quick:
    c.synthetic_size_3d = c.synthetic_size_wild = 256
    c.synthetic_size_heldout = 8
    c.synthetic_stats_samples = 1000
  t0 = time.perf_counter()
  bundle = build_data(c, seed=0)
  setup_s = time.perf_counter() - t0
  # Many more examples than the read-ahead buffers hold, so the rate is sustained.
  n = 12 if quick else 60
  per_batch = c.batch_size_3d + c.batch_size_wild
  rate = _rate(bundle.streams.next, n, per_batch, warmup=2)
  bundle.streams.close()
  src3, srcw = bundle.sources['3d'], bundle.sources['wild']
  k = 10 if quick else 40
  ex = src3[0]
  warper = AUG.ParamWarper(bundle.model, c.convention, bundle.param_stats)
  aug_ms = _per_example_ms(lambda i: AUG.augment(ex, np.random.default_rng(i), c.augment, warper,
                                                 bundle.param_stats), 5 * k)
  return {'setup_s': setup_s, 'streams_3d_plus_wild': rate,
          'batch_3d': c.batch_size_3d, 'batch_wild': c.batch_size_wild,
          'num_threads': c.num_threads, 'num_workers': c.num_workers,
          'read_ms_3d': _per_example_ms(lambda i: src3[i + 100], k),
          'read_ms_wild': _per_example_ms(lambda i: srcw[i + 100], k),
          'augment_ms_3d': aug_ms, 'describe': bundle.describe()}


def bench_aflw_wild(quick):
  from dasl_jax.assets import asset
  from dasl_jax.data import pipeline as PL
  from dasl_jax.data import readers as R
  from dasl_jax.data.config import data_config
  root = asset('aflw-wild')
  if not (root / 'pts21.npy').exists():
    return {'skipped': f'{root} not found'}
  c = data_config()
  src = R.AflwWildSource(root, skip_bad_rows=True)
  s = PL.Stream(src, c.batch_size_wild, 1, PL.ExampleMap(PL.KEYS_WILD, 1, c.augment),
                num_threads=c.num_threads, prefetch=c.prefetch)
  rate = _rate(s.next, 24 if quick else 150, c.batch_size_wild, warmup=2)
  s.close()
  return {'stream_wild': rate, 'read_ms': _per_example_ms(lambda i: src[i], 50 if quick else 200),
          'rows': len(src), 'skipped_rows': sorted(src.skipped)}


def bench_opencv_threads(rounds, batches):
  """The aflw-wild stream (decode + augmentation, Grain threads) with OpenCV's pool
  at one thread (``data.opencv_threads=1``) vs OpenCV's default pool (the training
  default, ``-1``), interleaved A B A B in this process, a fresh stream per window: crops/s."""
  import cv2
  from dasl_jax.assets import asset
  from dasl_jax.data import pipeline as PL
  from dasl_jax.data import readers as R
  from dasl_jax.data.config import data_config
  root = asset('aflw-wild')
  if not (root / 'pts21.npy').exists():
    return {'skipped': f'{root} not found'}
  c = data_config()
  src = R.AflwWildSource(root, skip_bad_rows=True)
  default_threads = cv2.getNumThreads()
  rates = {'one_thread': [], 'opencv_default': []}
  for r in range(rounds):
    for name, n in (('one_thread', 1), ('opencv_default', default_threads)):
      cv2.setNumThreads(n)
      # opencv_threads=-1: the map leaves the setting made here alone.
      s = PL.Stream(src, c.batch_size_wild, 1 + r, PL.ExampleMap(
          PL.KEYS_WILD, 1 + r, c.augment, opencv_threads=-1), num_threads=c.num_threads,
          prefetch=c.prefetch)
      rates[name].append(_rate(s.next, batches, c.batch_size_wild, warmup=4)['examples_per_s'])
      s.close()
  cv2.setNumThreads(default_threads)
  med = {k: float(np.median(v)) for k, v in rates.items()}
  return {'crops_per_s': rates, 'median': med, 'ratio_one_over_default':
          med['one_thread'] / med['opencv_default'], 'opencv_default_threads': default_threads,
          'grain_threads': c.num_threads, 'rounds': rounds, 'batches': batches,
          'batch': c.batch_size_wild}


def bench_train_step(quick):
  """Examples/s of the default train step (3D + wild batch per step): the compiled
  2DASL step that training runs (``benchmarks.run.full_step``), default config."""
  from benchmarks.run import full_step
  from dasl_jax.training.config import default_config
  config = default_config()
  batch = int(config.data.batch_size_3d)
  if int(config.data.batch_size_wild) != batch:  # full_step feeds equal batches
    raise SystemExit('benchmarks.pipeline expects equal default 3D and wild batches')
  one, compile_s, per_step = full_step(batch, l3d_only=False)
  t = common.time_fn(one, repeats=3 if quick else 10, warmup=1)
  what = (f'dasl_jax.training.step.CompiledStep, default config: {config.model.arch} '
          f'x{config.model.width}, {config.model.in_channels} channels')
  return {'what': what, 'compile_s': compile_s, 'step_median_s': t['median_s'],
          'examples_per_step': per_step, 'examples_per_s': per_step / t['median_s']}


def main(argv=None):
  # Same process set-up as the project's commands (experiments/*): see cpu_runtime.
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--json', default='', help='write the results here as JSON')
  ap.add_argument('--quick', action='store_true', help='small sizes, few batches (CI smoke)')
  ap.add_argument('--opencv_ab_rounds', type=int, default=0,
                  help='>0: also time the aflw-wild stream with OpenCV at one thread vs its '
                  'default pool, this many interleaved rounds (needs the assets)')
  ap.add_argument('--only_opencv_ab', action='store_true', help='run only that comparison')
  args = ap.parse_args(argv)
  result = {'load_average_before': os.getloadavg()}
  if args.opencv_ab_rounds > 0:
    result['opencv_threads'] = bench_opencv_threads(args.opencv_ab_rounds, 40 if args.quick
                                                    else 120)
    print(json.dumps(result['opencv_threads'], indent=1))
  if args.only_opencv_ab:
    result['load_average_after'] = os.getloadavg()
    if args.json:
      common.write_json(result, args.json)
    return
  result['synthetic'] = bench_synthetic(args.quick)
  result['aflw_wild'] = bench_aflw_wild(args.quick)
  result['train_step'] = bench_train_step(args.quick)
  result['load_average_after'] = os.getloadavg()
  pipe = result['synthetic']['streams_3d_plus_wild']['examples_per_s']
  need = result['train_step']['examples_per_s']
  result['pipeline_over_step'] = pipe / need
  result['quick'] = args.quick
  print(json.dumps({k: v for k, v in result.items()}, indent=1, default=str))
  print(f'pipeline {pipe:.1f} ex/s (synthetic 3D+wild) vs train step {need:.1f} ex/s: '
        f'{"keeps up" if pipe >= need else "the pipeline is the bottleneck"} '
        f'(ratio {pipe / need:.2f})')
  if args.json:
    common.write_json(dict(result, versions_data={
        k: v for k, v in common.versions(('grain', 'tensorflow-datasets', 'opencv-python-headless',
                                          'numpy')).items()}), args.json)


if __name__ == '__main__':
  main()
