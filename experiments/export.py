r"""Export a checkpoint's inference function (jax.export / StableHLO, optionally ONNX).

  python -m experiments.export --checkpoint WORKDIR --out model.jaxexport
      [--flm input|bootstrap] [--batch N] [--platforms cpu,cuda] [--onnx model.onnx]

The artefact maps uint8 crops (+ FLM points for 4-channel models) to whitened
parameters, parameters and 68 crop landmarks; reload it with
``dasl_jax.export.load(path)`` (no model code needed) and call
``exported.call(crops[, points18])``. After writing, the command reloads the
file and checks its outputs against the jitted model on random crops.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string('checkpoint', None, 'model work directory')
flags.DEFINE_string('out', None, 'output file (.jaxexport); metadata goes to OUT.json')
flags.DEFINE_enum('flm', 'input', ['input', 'bootstrap'], '4-channel models: FLM points '
                  'as an input, or self-bootstrapped inside the artefact')
flags.DEFINE_integer('bootstrap_iters', 2, 'passes of the self-bootstrapped FLM')
flags.DEFINE_integer('batch', 0, 'fixed batch size (0: symbolic batch dimension)')
flags.DEFINE_list('platforms', None, 'lowering platforms (default: this backend), e.g. cpu,cuda')
flags.DEFINE_string('bfm', None, 'BFM folder for the landmark basis (default: the '
                    "checkpoint's own)")
flags.DEFINE_enum('dot_dtype', 'float32', ['float32', 'bfloat16'], 'MobileNetV1 on CPU: '
                  'operand dtype of the stem and 1x1 products in the exported function '
                  '(bfloat16: float32 sums, ~1.2x batch-128 throughput on AVX512-BF16 CPUs)')
flags.DEFINE_string('onnx', None, 'also write an ONNX model here (needs jax2onnx)')


def run():
  import numpy as np
  from dasl_jax import checkpoint, export, inference, landmarks
  from dasl_jax.errors import DaslError
  logging.set_verbosity(logging.WARNING)
  if not FLAGS.checkpoint or not FLAGS.out:
    raise DaslError('--checkpoint and --out are required')
  restored = checkpoint.with_dot_dtype(checkpoint.restore(FLAGS.checkpoint), FLAGS.dot_dtype)
  models = inference.face_models(restored, FLAGS.bfm)
  exp, meta = export.export_model(restored, models.landmarks, FLAGS.flm, FLAGS.bootstrap_iters,
                                  batch=FLAGS.batch or None, platforms=FLAGS.platforms)
  meta['checkpoint'] = str(FLAGS.checkpoint)
  meta['dot_dtype'] = FLAGS.dot_dtype
  path = export.save(exp, meta, FLAGS.out)
  # Reload from the bytes and compare with the jitted model.
  loaded, _ = export.load(path)
  rng = np.random.default_rng(0)
  b = FLAGS.batch or 3
  crops = rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8)
  args = [crops]
  pred = inference.Predictor(restored, models.landmarks, bootstrap_iters=FLAGS.bootstrap_iters)
  if meta['inputs'] == ['crops', 'points18']:
    lms = pred.mean_lms68[None] + rng.normal(0, 2, (b, 68, 2))
    args.append(np.asarray(landmarks.select18_np(lms), np.float32))
    ref = pred.predict_crops(crops, lms)
  else:
    ref = pred.predict_crops(crops)
  got = [np.asarray(a) for a in loaded.call(*args)]
  # Relative to each output's scale: de-whitened shape coefficients are ~1e5.
  diffs = ', '.join(f'{k} {float(np.max(np.abs(g - ref[k])) / np.max(np.abs(ref[k]))):.1e}'
                    for g, k in zip(got, export.OUTPUTS))
  print(f'wrote {path} ({path.stat().st_size / 1e6:.2f} MB, inputs {meta["inputs"]}, '
        f'batch {meta["batch"]}, platforms {meta["platforms"]}); reloaded, max |diff| / '
        f'max |output| vs the jitted model: {diffs}')
  if FLAGS.onnx:
    export.export_onnx(restored, models.landmarks, FLAGS.onnx, FLAGS.flm, batch=b)
    print(f'wrote {FLAGS.onnx}')
  return 0


def main(argv):
  # Before JAX starts its threads: keeps XLA:CPU's per-step temp block in the heap
  # (otherwise ~40% of CPU time goes to page faults; benchmarks/README.md).
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  del argv
  from dasl_jax.errors import DaslError
  try:
    sys.exit(run())
  except DaslError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
