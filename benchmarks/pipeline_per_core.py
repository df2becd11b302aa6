"""Crops per second per CPU core of the real-data input path, and the host cores an
accelerator needs.

  python -m benchmarks.pipeline_per_core --dir_300wlp DIR/train_aug_120x120 \
      --landmarks_300wlp DIR/fan_landmarks_train_aug.txt [--tfds_data_dir TFDS] \
      [--cv2_threads 1] [--n 400] [--json OUT]

One thread in this process does, per example, what a Grain read thread does: the
source's ``__getitem__`` (file read + JPEG/PNG decode, labels, the 18 FLM points) and
the stream's ``ExampleMap`` (augmentation: warp, colour jitter, points, and for 3D
crops the parameter warp). Sources: the aflw-wild crops and a 300W-LP layout from
files, and the same two prepared as TFDS ArrayRecord (``experiments.prepare_data``)
when ``--tfds_data_dir`` holds them. Each rate is given per wall second and per CPU
second of this thread (``time.thread_time``): on a shared machine the CPU-second rate
is the per-core figure, the wall rate says how disturbed the run was.

Host cores for an accelerator: a 2DASL step takes one 3D and one wild crop per
sample pair, so ``cores = pairs_per_s * (cpu_s per 3D crop + cpu_s per wild crop)``
(the default target: one H100 at 10,000 pairs/s = 20,000 crops/s), assuming the
per-thread cost stays the same over that many cores (no shared-resource slowdown).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import common

TARGET_PAIRS = 10_000


def _time_source(src, example_map, n, warmup=20):
  """Per-example seconds (wall, thread CPU) of read and of map, over n examples."""
  size = len(src)
  for i in range(warmup):
    example_map(i, src[i % size])
  read_w = read_c = map_w = map_c = 0.0
  for i in range(n):
    j = (i * 7919) % size  # spread over the files (not one cached run of rows)
    w0, c0 = time.perf_counter(), time.thread_time()
    ex = src[j]
    w1, c1 = time.perf_counter(), time.thread_time()
    example_map(i, ex)
    w2, c2 = time.perf_counter(), time.thread_time()
    read_w += w1 - w0
    read_c += c1 - c0
    map_w += w2 - w1
    map_c += c2 - c1
  out = {'n': n, 'rows': size,
         'read_ms_wall': read_w / n * 1e3, 'read_ms_cpu': read_c / n * 1e3,
         'map_ms_wall': map_w / n * 1e3, 'map_ms_cpu': map_c / n * 1e3}
  out['crops_per_s_wall'] = n / (read_w + map_w)
  out['crops_per_cpu_s'] = n / (read_c + map_c)
  return out


def _bundle(args, tfds):
  from dasl_jax.data import build_data
  from dasl_jax.data.config import data_config
  c = data_config()
  c.source_3d, c.source_wild, c.heldout = '300wlp', 'aflw', 'none'
  c.dir_300wlp = args.dir_300wlp
  c.landmarks_300wlp = args.landmarks_300wlp
  c.skip_bad_rows = True
  c.num_threads = 1
  c.tfds_data_dir = args.tfds_data_dir if tfds else ''
  return c, build_data(c, seed=0)


def _measure(args, tfds):
  from dasl_jax.data import augment as AUG
  from dasl_jax.data import pipeline as PL
  c, bundle = _bundle(args, tfds)
  try:
    aug = c.augment
    warper = AUG.ParamWarper(bundle.model, c.convention, bundle.param_stats)
    map3 = PL.ExampleMap(PL.KEYS_3D, 1, aug, warper, bundle.param_stats)
    mapw = PL.ExampleMap(PL.KEYS_WILD, 2, aug)
    res = {'3d_300wlp': _time_source(bundle.sources['3d'], map3, args.n),
           'wild_aflw': _time_source(bundle.sources['wild'], mapw, args.n),
           'sources': {k: (v.describe() if hasattr(v, 'describe') else str(v))
                       for k, v in bundle.sources.items() if v is not None}}
  finally:
    bundle.streams.close()
  pair_cpu_s = 1 / res['3d_300wlp']['crops_per_cpu_s'] + 1 / res['wild_aflw']['crops_per_cpu_s']
  res['pair_cpu_ms'] = pair_cpu_s * 1e3
  res['cores_for_target'] = args.target_pairs * pair_cpu_s
  return res


def jitter_ab(args, rounds):
  """Interleaved A/B in this process: the whole per-example work (files) with the
  float32 step-by-step colour jitter (``color_jitter_reference``, the form before
  2026-12-02) and with the one-pass form; medians of the per-round CPU-second rates."""
  from dasl_jax.data import augment as AUG
  from dasl_jax.data import pipeline as PL
  c, bundle = _bundle(args, tfds=False)
  one_pass = AUG.color_jitter
  warper = AUG.ParamWarper(bundle.model, c.convention, bundle.param_stats)
  maps = {'3d_300wlp': PL.ExampleMap(PL.KEYS_3D, 1, c.augment, warper, bundle.param_stats),
          'wild_aflw': PL.ExampleMap(PL.KEYS_WILD, 2, c.augment)}
  srcs = {'3d_300wlp': bundle.sources['3d'], 'wild_aflw': bundle.sources['wild']}
  runs = {v: {k: [] for k in maps} for v in ('reference', 'one_pass')}
  try:
    for _ in range(rounds):
      for variant, fn in (('reference', AUG.color_jitter_reference), ('one_pass', one_pass)):
        AUG.color_jitter = fn
        for k in maps:
          runs[variant][k].append(_time_source(srcs[k], maps[k], args.n // 2, warmup=5))
  finally:
    AUG.color_jitter = one_pass
    bundle.streams.close()
  out = {}
  for variant, per in runs.items():
    out[variant] = {k: {'crops_per_cpu_s_median': float(np.median([r['crops_per_cpu_s'] for r in v])),
                        'map_ms_cpu_median': float(np.median([r['map_ms_cpu'] for r in v])),
                        'crops_per_cpu_s_rounds': [round(r['crops_per_cpu_s'], 1) for r in v]}
                    for k, v in per.items()}
  out['rounds'] = rounds
  return out


def main(argv=None):
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--dir_300wlp', required=True, help='train_aug_120x120 folder '
                  '(python -m experiments.synthetic_300wlp --out DIR --n 256 writes one)')
  ap.add_argument('--landmarks_300wlp', default='', help='detector landmarks for the FLM')
  ap.add_argument('--tfds_data_dir', default='', help='prepared dasl_aflw_wild + dasl_300wlp')
  ap.add_argument('--cv2_threads', type=int, default=1,
                  help='cv2.setNumThreads (-1: leave OpenCV\'s default)')
  ap.add_argument('--n', type=int, default=400, help='examples timed per source')
  ap.add_argument('--target_pairs', type=float, default=TARGET_PAIRS,
                  help='sample pairs/s of the accelerator (one 3D + one wild crop each)')
  ap.add_argument('--ab_rounds', type=int, default=0,
                  help='>0: also the interleaved colour-jitter A/B with this many rounds')
  ap.add_argument('--json', default='')
  args = ap.parse_args(argv)
  import cv2
  cv2_default = cv2.getNumThreads()
  if args.cv2_threads >= 0:
    cv2.setNumThreads(args.cv2_threads)
  result = common.header(('opencv-python-headless', 'numpy', 'grain', 'tensorflow-datasets',
                           'array-record', 'jax'))
  result.update({'cv2_threads': cv2.getNumThreads(), 'cv2_default_threads': cv2_default,
                 'load_average_before': os.getloadavg()})
  result['files'] = _measure(args, tfds=False)
  if args.tfds_data_dir:
    result['tfds'] = _measure(args, tfds=True)
  if args.ab_rounds:
    result['jitter_ab'] = jitter_ab(args, args.ab_rounds)
  result['load_average_after'] = os.getloadavg()
  print(json.dumps(result, indent=1, default=str))
  for k in ('files', 'tfds'):
    if k in result:
      r = result[k]
      print(f"{k}: 3D {r['3d_300wlp']['crops_per_cpu_s']:.0f} crops/CPU-s, wild "
            f"{r['wild_aflw']['crops_per_cpu_s']:.0f} crops/CPU-s; "
            f"{r['cores_for_target']:.1f} cores for {args.target_pairs:.0f} pairs/s")
  if args.json:
    common.write_json(result, args.json)


if __name__ == '__main__':
  main()
