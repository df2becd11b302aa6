r"""onnxruntime (dasl_jax.inference.onnx) against the jitted JAX function, interleaved.

  python -m benchmarks.onnx [--json OUT.json] [--quick] [--large_batch 128]
      [--repeats 10] [--interleave_rounds 5] [--ort_threads 0]

The function is the same on both sides: uint8 crops -> MobileNetV1 x0.5 (3DDFA_V2's
mb05 from $DASL_ASSETS, else random weights of its shapes) -> de-whitened
parameters -> 68 crop landmarks (``export.inference_function``, jitted; and its
ONNX graph, one session with a symbolic batch). Each round times JAX then
onnxruntime at batch 1 (ms/img) and at ``--large_batch`` (img/s), ``--repeats``
calls each (median); the figures are medians over ``--interleave_rounds`` rounds, so a
change of load on a shared machine hits both contenders alike. Ratios > 1:
onnxruntime faster. ``benchmarks.export`` times the same contenders (and
jax.export) one after another.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from benchmarks.inference import WIDTH, load_model_inputs
from dasl_jax.inference import export
from dasl_jax.models import ModelConfig, create_regressor

# --json, --quick, --large_batch and --repeats come from benchmarks.inference.
FLAGS = flags.FLAGS
flags.DEFINE_integer('interleave_rounds', 5, 'Interleaved rounds (median over rounds reported).')
flags.DEFINE_integer('ort_threads', 0, 'onnxruntime intra-op threads (0: its default, '
                     'one per core)')


@dataclasses.dataclass
class _Model:
  module: object
  variables: object
  model_config: ModelConfig
  param_stats: object


def run(quick=False, large_batch=128, repeats=10, rounds=5, ort_threads=0):
  from dasl_jax.inference import onnx as onnx_export
  variables, stats, lm_model, weights = load_model_inputs()
  cfg = ModelConfig(arch='mobilenet', width=WIDTH, in_channels=3, convention='v2',
                    depthwise='auto')
  model = _Model(create_regressor(cfg), variables, cfg, stats)
  large = 4 if quick else large_batch
  repeats, rounds = (2, 2) if quick else (repeats, rounds)
  rng = np.random.default_rng(0)
  images = {b: rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8) for b in (1, large)}
  fn, _ = export.inference_function(model, lm_model)
  jitted = jax.jit(lambda x: fn(x)[2])
  t0 = time.perf_counter()
  sess = onnx_export.session(onnx_export.build_model(model, lm_model), ort_threads)
  build_s = time.perf_counter() - t0
  calls = {'jax_jit': lambda b: jax.block_until_ready(jitted(images[b])),
           'onnxruntime': lambda b: sess.run(['lms68'], {'crops': images[b]})[0]}
  diff = float(np.abs(np.asarray(calls['jax_jit'](large)) - calls['onnxruntime'](large)).max())
  per_round = {k: {b: [] for b in (1, large)} for k in calls}
  for _ in range(rounds):
    for b in (1, large):
      for name, call in calls.items():
        t = common.time_fn(lambda: call(b), repeats=repeats, warmup=1)
        per_round[name][b].append(t['median_s'])
  res = {'model': f'MobileNetV1 x{WIDTH} + 68 landmarks', 'weights': weights,
         'large_batch': large, 'quick': quick, 'rounds': rounds, 'repeats': repeats,
         'ort_threads': ort_threads or 'default', 'onnx_build_s': build_s,
         'note': 'interleaved rounds; machine.load_average_1_5_15min says how busy the '
                 'machine was (a shared 2-core machine gives disturbed absolute figures)',
         'max_lms_diff_px': diff, 'results': {}}
  for name in calls:
    r1, rl = np.median(per_round[name][1]), np.median(per_round[name][large])
    res['results'][name] = {'batch1_ms_per_img': float(r1 * 1e3),
                            'large_img_per_s': float(large / rl),
                            'rounds_batch1_s': per_round[name][1],
                            f'rounds_batch{large}_s': per_round[name][large]}
    print(f'{name:12s} batch 1: {r1 * 1e3:.3f} ms/img   batch {large}: {large / rl:.1f} img/s',
          flush=True)
  j, o = res['results']['jax_jit'], res['results']['onnxruntime']
  res['ratios'] = {'onnxruntime_speed_vs_jax_jit_batch1':
                   j['batch1_ms_per_img'] / o['batch1_ms_per_img'],
                   'onnxruntime_speed_vs_jax_jit_large':
                   o['large_img_per_s'] / j['large_img_per_s']}
  for k, v in res['ratios'].items():
    print(f'{k}: {v:.2f}x')
  print(f'max landmark difference (px): {diff:.2e}')
  return res


def main(argv):
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  del argv
  common.finish(lambda: run(FLAGS.quick, FLAGS.large_batch, FLAGS.repeats, FLAGS.interleave_rounds,
                            FLAGS.ort_threads), FLAGS.json)


if __name__ == '__main__':
  app.run(main)
