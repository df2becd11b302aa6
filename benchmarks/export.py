r"""Latency of the exported inference function against the jitted one (and peers).

  python -m benchmarks.export [--json OUT.json] [--quick]

One run times, at batch 1 (ms/img) and at a large batch (img/s), the same
function (uint8 crops -> MobileNetV1 x0.5 -> de-whitened parameters -> 68 crop
landmarks):

* ``jax_jit``: ``jax.jit`` of ``dasl_jax.inference.export.inference_function``;
* ``jax_export``: that function serialised with ``jax.export`` (symbolic
  batch), deserialised, and called through ``jax.jit(exported.call)``;
* ``onnxruntime``: the ONNX graph of ``dasl_jax.inference.onnx`` (written from
  the same variables; one session, symbolic batch) on onnxruntime's CPU
  provider (default threads), where onnx and onnxruntime are installed;
* ``torch``: the PyTorch original with the same weights
  (``benchmarks.inference.torch_predictor``), where torch is installed.

Ratios are against ``jax_jit`` of the same run. Weights: 3DDFA_V2's mb05 from
$DASL_ASSETS when present, else random weights of the same shapes.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from benchmarks.inference import WIDTH, load_model_inputs, torch_predictor
from dasl_jax.inference import export
from dasl_jax.models import ModelConfig, create_regressor

# --json, --quick, --large_batch and --repeats are defined by benchmarks.inference
# (imported above for its model loader and PyTorch peer); absl refuses a second
# definition, so this module shares them.
FLAGS = flags.FLAGS


@dataclasses.dataclass
class _Model:
  """What ``export.inference_function`` reads from a restored checkpoint."""
  module: object
  variables: object
  model_config: ModelConfig
  param_stats: object


def run(quick=False, large_batch=128, repeats=20):
  variables, stats, lm_model, weights = load_model_inputs()
  cfg = ModelConfig(arch='mobilenet', width=WIDTH, in_channels=3, convention='v2',
                    depthwise='auto')
  model = _Model(create_regressor(cfg), variables, cfg, stats)
  large = 4 if quick else large_batch
  repeats = 2 if quick else repeats
  warmup = 1 if quick else 2
  rng = np.random.default_rng(0)
  images = {b: rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8) for b in (1, large)}
  res = {'model': f'MobileNetV1 x{WIDTH} + 68 landmarks', 'weights': weights,
         'backend': jax.default_backend(), 'large_batch': large, 'quick': quick,
         'note': 'contenders run one after another (not interleaved): on a shared machine '
                 'compare runs only at similar load (machine.load_average_1_5_15min)',
         'results': {}}
  outs = {}

  def measure(name, calls, block=None):
    r = {}
    for b in (1, large):
      r[f'batch{b}'] = common.time_fn(calls[b], repeats=repeats, warmup=warmup, block=block)
      outs[(name, b)] = np.asarray(calls[b]())
    r['batch1_ms_per_img'] = r['batch1']['median_s'] * 1e3
    r['large_img_per_s'] = large / r[f'batch{large}']['median_s']
    res['results'][name] = r
    print(f'{name:12s} batch 1: {r["batch1_ms_per_img"]:.3f} ms/img   batch {large}: '
          f'{r["large_img_per_s"]:.1f} img/s', flush=True)

  fn, _ = export.inference_function(model, lm_model)
  jitted = jax.jit(lambda x: fn(x)[2])
  measure('jax_jit', {b: (lambda b=b: jitted(images[b])) for b in (1, large)},
          jax.block_until_ready)

  exp, meta = export.export_model(model, lm_model)
  with tempfile.TemporaryDirectory() as tmp:
    path = export.save(exp, meta, Path(tmp) / 'm.jaxexport')
    res['export_bytes'] = path.stat().st_size
    loaded, _ = export.load(path)
  call = jax.jit(lambda x: loaded.call(x)[2])
  measure('jax_export', {b: (lambda b=b: call(images[b])) for b in (1, large)},
          jax.block_until_ready)

  try:
    import onnx  # noqa: F401
    import onnxruntime as ort
    have_onnx = True
  except ImportError:
    have_onnx = False
    res['results']['onnxruntime'] = None
  if have_onnx:
    from dasl_jax.inference import onnx as onnx_export
    with tempfile.TemporaryDirectory() as tmp:
      f = export.export_onnx(model, lm_model, Path(tmp) / 'm.onnx')
      res['onnx_bytes'] = f.stat().st_size
      sess = onnx_export.session(f)  # one file, symbolic batch
    measure('onnxruntime', {b: (lambda b=b: sess.run(['lms68'], {'crops': images[b]})[0])
                            for b in (1, large)})
    res['onnxruntime_version'] = ort.__version__
    res['onnx_version'] = onnx.__version__

  try:
    if not FLAGS.torch:
      raise ImportError
    import torch  # noqa: F401
    tp = torch_predictor(variables, stats, lm_model)
    measure('torch', {b: (lambda b=b: tp(images[b])) for b in (1, large)})
    res['results']['torch']['threads'] = 2
  except ImportError:
    res['results']['torch'] = None

  base = res['results']['jax_jit']
  ratios, diffs = {}, {}
  for name, r in res['results'].items():
    if r is None or name == 'jax_jit':
      continue
    # > 1: faster than the jitted JAX function.
    ratios[f'{name}_speed_vs_jax_jit_batch1'] = base['batch1_ms_per_img'] / r['batch1_ms_per_img']
    ratios[f'{name}_speed_vs_jax_jit_large'] = r['large_img_per_s'] / base['large_img_per_s']
    diffs[name] = float(np.abs(outs[(name, large)] - outs[('jax_jit', large)]).max())
  res['ratios'] = ratios
  res['max_lms_diff_vs_jax_jit_px'] = diffs
  for k, v in ratios.items():
    print(f'{k}: {v:.2f}x')
  print('max landmark difference vs jax_jit (px):', {k: f'{v:.2e}' for k, v in diffs.items()})
  return res


def main(argv):
  # Same process set-up as the project's commands (experiments/*): see cpu_runtime.
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  del argv
  common.finish(lambda: run(FLAGS.quick, FLAGS.large_batch, FLAGS.repeats), FLAGS.json)


if __name__ == '__main__':
  app.run(main)
