r"""Where the JAX inference path loses to onnxruntime: variants of the jitted function,
each compiled ahead of time, interleaved with onnxruntime in one process (issue 22, item 3).

  python -m benchmarks.onnx_variants [--json OUT.json] [--rounds 5] [--large_batch 128]
      [--repeats 20] [--tune_malloc] [--variants fused,pad_once,micro8,one_tap]

The function is ``benchmarks.onnx``'s (uint8 crops -> mb05 -> 68 landmarks). Variants:
  fused     the depthwise 3x3 with padding, the previous BN + ReLU and the nine taps in one
            XLA fusion (the form before ``layers._dw_forward(pad_once=True)``);
  pad_once  the padded input written once, then the taps (what inference does now);
  micro8    pad_once, with the network run over micro-batches of 8 (``jax.lax.map``);
  one_tap   NOT a depthwise (the centre tap only): how fast the rest of the network is,
            the bound on anything a better depthwise could give.
Each round times every variant and onnxruntime at batch 1 and at ``--large_batch``;
medians over rounds; ratios against onnxruntime of the same rounds. ``--tune_malloc``
applies ``cpu_runtime.tune_malloc`` (what every command does) before anything runs.
"""
from __future__ import annotations

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from benchmarks.inference import WIDTH, load_model_inputs

# --json, --large_batch and --repeats come from benchmarks.inference.
FLAGS = flags.FLAGS
flags.DEFINE_integer('rounds', 5, 'Interleaved rounds (median reported).')
flags.DEFINE_bool('tune_malloc', False, 'Apply cpu_runtime.tune_malloc first (as commands do).')
flags.DEFINE_list('variants', ['fused', 'pad_once', 'micro8', 'one_tap'], 'Variants to time.')

VARIANTS = ('fused', 'pad_once', 'micro8', 'one_tap')


def _depthwise(variant):
  from dasl_jax.models import layers
  if variant == 'fused':
    return lambda x, k, s: layers._dw_forward(x, k, s, pad_once=False)
  if variant == 'one_tap':
    return lambda x, k, s: x[:, ::s, ::s] * k.astype(x.dtype).reshape(9, -1)[4]
  return lambda x, k, s: layers._dw_forward(x, k, s, pad_once=True)


def _micro(fn, size):
  def f(x):
    b = x.shape[0]
    if b <= size or b % size:
      return fn(x)
    y = jax.lax.map(fn, x.reshape((b // size, size) + x.shape[1:]))
    return y.reshape((b,) + y.shape[2:])
  return f


def run(variants, rounds=5, repeats=10, large=128, tune=False):
  from dasl_jax import cpu_runtime
  from dasl_jax.errors import DaslError
  from dasl_jax.inference import export
  from dasl_jax.inference import onnx as onnx_export
  from dasl_jax.models import ModelConfig, create_regressor, layers
  from benchmarks.onnx import _Model
  bad = [v for v in variants if v not in VARIANTS]
  if bad:
    raise DaslError(f'--variants: unknown {bad}; choose from {", ".join(VARIANTS)}')
  tuned = cpu_runtime.tune_malloc() if tune else False
  variables, stats, lm_model, weights = load_model_inputs()
  cfg = ModelConfig(arch='mobilenet', width=WIDTH, in_channels=3, convention='v2',
                    depthwise='auto')
  model = _Model(create_regressor(cfg), variables, cfg, stats)
  rng = np.random.default_rng(0)
  images = {b: rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8) for b in (1, large)}
  calls = {}
  primal = layers.depthwise3x3
  try:
    for v in variants:
      # Swapped while tracing and compiling only; the executables keep what they saw.
      layers.depthwise3x3 = _depthwise(v)
      fn, _ = export.inference_function(model, lm_model)
      f = lambda x, fn=fn: fn(x)[2]  # noqa: E731
      if v == 'micro8':
        f = _micro(f, 8)
      comp = {b: jax.jit(f).lower(images[b]).compile() for b in (1, large)}
      calls[v] = (lambda comp: lambda b: jax.block_until_ready(comp[b](images[b])))(comp)
  finally:
    layers.depthwise3x3 = primal
  sess = onnx_export.session(onnx_export.build_model(model, lm_model), 0)
  calls['onnxruntime'] = lambda b: sess.run(['lms68'], {'crops': images[b]})[0]
  ref = calls['onnxruntime'](large)
  diffs = {v: float(np.abs(np.asarray(calls[v](large)) - ref).max()) for v in variants}
  per = {k: {1: [], large: []} for k in calls}
  for _ in range(rounds):
    for b in (1, large):
      for k, call in calls.items():
        per[k][b].append(common.time_fn(lambda: call(b), repeats=repeats, warmup=1)['median_s'])
  o1, ol = np.median(per['onnxruntime'][1]), np.median(per['onnxruntime'][large])
  res = {'model': f'MobileNetV1 x{WIDTH} + 68 landmarks', 'weights': weights,
         'tune_malloc': tuned, 'rounds': rounds, 'repeats': repeats, 'large_batch': large,
         'max_lms_diff_vs_onnxruntime_px': diffs, 'results': {}}
  for k in calls:
    b1, bl = float(np.median(per[k][1])), float(np.median(per[k][large]))
    res['results'][k] = {'batch1_ms': b1 * 1e3, 'large_img_per_s': large / bl,
                         'batch1_time_vs_onnxruntime': b1 / o1,
                         'large_speed_vs_onnxruntime': ol / bl,
                         'rounds_batch1_s': per[k][1], f'rounds_batch{large}_s': per[k][large]}
    print(f'{k:12s} batch 1: {b1 * 1e3:6.3f} ms ({b1 / o1:.2f}x onnxruntime)   batch {large}: '
          f'{large / bl:7.1f} img/s ({ol / bl:.2f}x onnxruntime)', flush=True)
  return res


def main(argv):
  del argv
  common.finish(lambda: run(FLAGS.variants, FLAGS.rounds, FLAGS.repeats, FLAGS.large_batch,
                            FLAGS.tune_malloc), FLAGS.json)


if __name__ == '__main__':
  app.run(main)
