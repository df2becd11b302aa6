r"""Export a checkpoint's inference function (jax.export / StableHLO, or ONNX).

  python -m experiments.export --checkpoint WORKDIR --out model.jaxexport
      [--flm input|bootstrap] [--batch N] [--platforms cpu,cuda]
  python -m experiments.export --checkpoint WORKDIR --out model.onnx --format onnx
  python -m experiments.export --checkpoint WORKDIR --out model_int8.onnx --format onnx \
      --quantize int8 --calibration $DASL_ASSETS/aflw-wild/images [--calibration_size 256]

ONNX (``dasl_jax.inference.onnx``): symbolic batch, float32, inputs ``crops``
[+ ``points18`` for 4-channel models], outputs ``whitened``, ``params``,
``lms68``; run it with onnxruntime (``onnx_export.OnnxPredictor`` or
``experiments.predict --onnx FILE`` / ``experiments.evaluate --onnx FILE``).

``--quantize int8`` (``dasl_jax.inference.quantize``): onnxruntime's static
quantization of that graph, calibrated on face crops from ``--calibration DIR``
(training-side crops such as aflw-wild's, never the test set): 8-bit weights
(``--int8_weights``, uint8 by default) and uint8 activations in the convolutions;
the input stage, the linear head and the landmark stage stay float32. Score it
with ``experiments.evaluate --onnx FILE``.

The artefact maps uint8 crops (+ FLM points for 4-channel models) to whitened
parameters, parameters and 68 crop landmarks; reload it with
``dasl_jax.inference.export.load(path)`` (no model code needed) and call
``exported.call(crops[, points18])``. After writing, the command reloads the
file and checks its outputs against the jitted model on random crops.
"""
from __future__ import annotations


from absl import app, flags

from dasl_jax import cli

FLAGS = flags.FLAGS
cli.define_flags('checkpoint', 'bootstrap_iters', 'bfm', 'dot_dtype',
                 bootstrap_iters='--flm bootstrap: passes of the self-bootstrapped FLM',
                 dot_dtype='MobileNetV1 on CPU: operand dtype of the stem and 1x1 products in '
                 'the exported function (bfloat16: float32 sums, ~1.2x batch-128 throughput '
                 'on AVX512-BF16 CPUs)')
flags.DEFINE_string('out', None, 'output file (.jaxexport); metadata goes to OUT.json')
flags.DEFINE_enum('flm', 'input', ['input', 'bootstrap'], '4-channel models: FLM points '
                  'as an input, or self-bootstrapped inside the artefact')
flags.DEFINE_integer('batch', 0, 'fixed batch size (0: symbolic batch dimension)')
flags.DEFINE_list('platforms', None, 'lowering platforms (default: this backend), e.g. cpu,cuda')
flags.DEFINE_enum('format', 'jaxexport', ['jaxexport', 'onnx'], 'jaxexport: jax.export '
                  'bytes + OUT.json; onnx: an ONNX model (onnxruntime; --flm input only, '
                  'float32, symbolic batch)')
flags.DEFINE_enum('quantize', 'none', ['none', 'int8'], 'with --format onnx: int8 static '
                  'quantization (onnxruntime) calibrated on --calibration')
flags.DEFINE_string('calibration', None, 'with --quantize int8: a folder of face crops to '
                    'calibrate on (e.g. $DASL_ASSETS/aflw-wild/images; never the test set); '
                    'other sizes than 120x120 are resized')
flags.DEFINE_integer('calibration_size', 256, 'with --quantize int8: crops read from '
                     '--calibration (spread evenly over its sorted files)')
flags.DEFINE_enum('calibration_method', 'minmax', ['minmax', 'entropy', 'percentile'],
                  'with --quantize int8: how activation ranges are set from the calibration '
                  'crops (onnxruntime.quantization.CalibrationMethod)')
flags.DEFINE_enum('int8_weights', 'uint8', ['uint8', 'int8'], 'with --quantize int8: weight type. '
                  'uint8 (u8u8 kernels) is exact on every x86 CPU; int8 (u8s8) is the fast path '
                  'on CPUs with VNNI but saturates without it (NME 3.80 -> 4.07 on AVX2 Zen 3; '
                  'dasl_jax/inference/quantize.py)')


def run():
  import numpy as np
  from dasl_jax import inference
  from dasl_jax.io import checkpoint
  from dasl_jax.inference import export
  from dasl_jax.geometry import landmarks
  from dasl_jax.errors import DaslError

  if not FLAGS.checkpoint or not FLAGS.out:
    raise DaslError('--checkpoint and --out are required')
  if FLAGS.quantize != 'none':
    if FLAGS.format != 'onnx':
      raise DaslError(f'--quantize {FLAGS.quantize}: only with --format onnx (onnxruntime\'s '
                      'quantization of the ONNX graph)')
    if not FLAGS.calibration:
      raise DaslError(f'--quantize {FLAGS.quantize} needs --calibration DIR (a folder of face '
                      'crops, e.g. $DASL_ASSETS/aflw-wild/images; never the test set)')
    from dasl_jax.inference import quantize
    calibration = quantize.calibration_crops(FLAGS.calibration, FLAGS.calibration_size)
  elif FLAGS.calibration:
    raise DaslError('--calibration goes with --quantize int8')
  if FLAGS.format == 'onnx':
    if FLAGS.dot_dtype != 'float32':
      raise DaslError('--dot_dtype bfloat16: the ONNX graph is float32 (use --format jaxexport)')
    if FLAGS.platforms:
      raise DaslError('--platforms: only for --format jaxexport (ONNX runs where onnxruntime does)')
  restored = checkpoint.with_dot_dtype(checkpoint.restore(FLAGS.checkpoint), FLAGS.dot_dtype)
  models = inference.face_models(restored, FLAGS.bfm)
  if FLAGS.format == 'onnx':
    return run_onnx(restored, models, calibration if FLAGS.quantize != 'none' else None)
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
  return 0


def _random_inputs(pred, b):
  import numpy as np
  from dasl_jax.geometry import landmarks
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8)
  lms = pred.mean_lms68[None] + rng.normal(0, 2, (b, 68, 2))
  return crops, lms, np.asarray(landmarks.select18_np(lms), np.float32)


def run_onnx(restored, models, calibration=None):
  """--format onnx: write, reload with onnxruntime, compare with the jitted model;
  with ``calibration`` ((crops, files) of :func:`quantize.calibration_crops`), the
  int8 model of that graph instead."""
  import tempfile
  from pathlib import Path
  import numpy as np
  from dasl_jax import inference
  from dasl_jax.inference import export
  from dasl_jax.inference import onnx as onnx_export
  if calibration is None:
    path = export.export_onnx(restored, models.landmarks, FLAGS.out, FLAGS.flm)
  else:
    from dasl_jax.inference import quantize
    crops, files = calibration
    with tempfile.TemporaryDirectory() as tmp:
      flt = export.export_onnx(restored, models.landmarks, Path(tmp) / 'float.onnx', FLAGS.flm)
      path = quantize.quantize_regressor(
          flt, FLAGS.out, crops, FLAGS.calibration_method, FLAGS.int8_weights,
          note=f'{len(files)} crops of {FLAGS.calibration}')
  sess = onnx_export.session(path)
  names = [i.name for i in sess.get_inputs()]
  pred = inference.Predictor(restored, models.landmarks, bootstrap_iters=FLAGS.bootstrap_iters)
  b = FLAGS.batch or 3
  crops, lms, pts = _random_inputs(pred, b)
  if calibration is not None:  # random pixels are far from the calibrated ranges
    crops = calibration[0][:b]
  feed = {'crops': crops, 'points18': pts}
  got = sess.run(list(export.OUTPUTS), {n: feed[n] for n in names})
  ref = pred.predict_crops(crops, lms if 'points18' in names else None)
  diffs = ', '.join(f'{k} {float(np.max(np.abs(g - ref[k])) / np.max(np.abs(ref[k]))):.1e}'
                    for g, k in zip(got, export.OUTPUTS))
  kind = 'ONNX' if calibration is None else (
      f'ONNX int8, calibrated on {len(calibration[1])} crops of {FLAGS.calibration}')
  print(f'wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {kind}, inputs {names}, batch '
        f'symbolic); reloaded with onnxruntime, max |diff| / max |output| vs the jitted '
        f'float model: {diffs}')
  return 0


def _main(argv):
  del argv
  return run()


main = cli.command(_main)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
