r"""Evaluate on AFLW2000-3D: 68-point NME by yaw bin (original and re-annotated GT), pose MAE.

From a model directory (a converted or trained checkpoint):

  python -m experiments.evaluate --checkpoint /tmp/mb05 \
    --aflw2000_dir ../shared/assets/aflw2000-3d [--subset 1998|2000] [--json out.json]

From saved predictions, (N, 62) whitened (or, with --param_kind raw,
de-whitened) parameters or (N, 2, 68) crop-pixel landmarks, N = 2000 (or 1998
with --subset 1998); with --names FILE (one AFLW2000-3D file name a line, any
N), (N, 2, 68) or (N, 3, 68) landmarks in original-image pixels:

  python -m experiments.evaluate --predictions params.npy \
    --param_stats stats.pkl --bfm ../shared/assets/bfm --convention v2 \
    --aflw2000_dir ../shared/assets/aflw2000-3d

3DDFA_V2's mb05 converted with experiments.convert_checkpoint gives, on all
2000 images, original GT: 2.925 / 3.667 / 4.784, mean of bins 3.792.
4-channel models take their FLM channel from detect_testData_1998.txt, which
has no detection for images 1081 and 1798: only --subset 1998 works for them,
unless --flm bootstrap (the landmark map self-bootstrapped from the mean face,
--bootstrap_iters passes; no detector needed).

Protocol variants: --yaw_file default|new bins by AFLW2000-3D.pose.npy
(1312/383/305 images) or AFLW2000-3D-new.pose.npy (1306/462/232); --nme 3d is
2DASL's 3D 68-point NME (z shifted to a minimum of 0 per face, normalised by the
2D ground-truth box). The first output line says which protocol ran.

The AFLW 21-point benchmark (68 predicted points mapped to AFLW's 21, invisible
points masked, NME normalised by the visible ground truth's box), on a folder
with the aflw-wild layout:

  python -m experiments.evaluate --checkpoint /tmp/mb05 --aflw_dir ../shared/assets/aflw-wild
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from dasl_jax import aflw2000, assets, camera, evaluation, protocols
from dasl_jax import morphable_model as mm
from dasl_jax import params as P
from dasl_jax.errors import DaslError

flags.DEFINE_string('aflw2000_dir', None, 'AFLW2000-3D folder (default: $DASL_ASSETS/aflw2000-3d).')
flags.DEFINE_string('predictions', None, '.npy of (N, 62) parameters, (N, 2, 68) landmarks '
                    '(crop pixels; image pixels with --names) or (N, 3, 68) image-pixel landmarks.')
flags.DEFINE_string('names', None, 'With --predictions: a text file naming the N evaluated '
                    'AFLW2000-3D images (one file name a line); landmarks are then in '
                    'original-image pixels.')
flags.DEFINE_enum('landmark_frame', 'auto', ['auto', 'crop', 'image'], 'Pixels of saved '
                  'landmarks: auto = image with --names or (N, 3, 68), crop otherwise.')
flags.DEFINE_enum('param_kind', 'whitened', ['whitened', 'raw'], '(N, 62) predictions: the '
                  'network\'s whitened output, or raw (de-whitened) parameters as 3DDFA_V2 saves.')
flags.DEFINE_enum('yaw_file', 'default', ['default', 'new'], 'Yaw bins from '
                  'AFLW2000-3D.pose.npy (default) or AFLW2000-3D-new.pose.npy.')
flags.DEFINE_enum('nme', '2d', ['2d', '3d'], '2D NME (x, y), or 2DASL\'s 3D NME (z shifted '
                  'to min 0 per face; original ground truth only).')
flags.DEFINE_string('checkpoint', None, 'Model directory to run on the crops.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
flags.DEFINE_string('param_stats', None, 'Whitening statistics for (N, 62) predictions.')
flags.DEFINE_string('bfm', None, 'Morphable model (folder or file) for landmarks from '
                    'parameters (default: $DASL_ASSETS/bfm, i.e. its keypoints68).')
flags.DEFINE_enum('convention', 'v1', ['v1', 'v2'], 'Pixel convention of (N, 62) '
                  'predictions (checkpoints store their own).')
flags.DEFINE_enum('subset', None, ['1998', '2000'], 'All 2000 images, or 2DASL\'s 1998 '
                  '(default: 2000; 1998 for 4-channel models).')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_integer('batch_size', 128, 'Images per jitted forward pass.')
flags.DEFINE_string('predictions_out', None, 'Save predicted crop landmarks (N, 2, 68) here.')
flags.DEFINE_enum('flm', 'detector', ['detector', 'bootstrap'], '4-channel models: FLM channel '
                  'from detect_testData_1998.txt (2DASL\'s protocol) or self-bootstrapped from '
                  'the mean face (no detector; any subset).')
flags.DEFINE_integer('bootstrap_iters', 2, 'Forward passes of the self-bootstrapped FLM.')
flags.DEFINE_string('aflw_dir', None, 'Instead of AFLW2000-3D: the AFLW 21-point benchmark on a '
                    'folder with the aflw-wild layout (list.txt, images/, pts21.npy, yaws.npy, '
                    'roi_box.npy); 68 predicted points mapped to 21, invisible points masked.')
flags.DEFINE_integer('host_devices', 1, 'CPU only: split each batch over this many XLA host '
                     'devices (0: one per core; 1: off). benchmarks.inference measured 0 to 11% '
                     'at batch 128 on 2 cores, so it is off by default.')
flags.DEFINE_enum('dot_dtype', 'float32', ['float32', 'bfloat16'], 'MobileNetV1 on CPU: operand '
                  'dtype of its stem and 1x1 matrix products (bfloat16: float32 sums; ~1.2x '
                  'batch-128 inference on AVX512-BF16 CPUs, benchmarks/README.md).')
FLAGS = flags.FLAGS


def _bfm(path):
  path = Path(path) if path else assets.asset('bfm')
  if not path.exists():
    raise DaslError(f'--bfm {path}: not found (a morphable model folder such as 3DDFA\'s '
                    'bfm/ with keypoints68/, needed to turn parameters into landmarks)')
  return mm.load(path)


def _predictor():
  """--checkpoint/--step with --dot_dtype applied, as an ``inference.Predictor``."""
  from dasl_jax import checkpoint, inference
  if FLAGS.bootstrap_iters < 1:
    raise DaslError(f'--bootstrap_iters must be >= 1, got {FLAGS.bootstrap_iters}')
  restored = checkpoint.with_dot_dtype(checkpoint.restore(FLAGS.checkpoint, FLAGS.step),
                                       FLAGS.dot_dtype)
  return inference.Predictor(restored, _bfm(FLAGS.bfm), batch_size=FLAGS.batch_size,
                             bootstrap_iters=FLAGS.bootstrap_iters)


def _load_predictions(path):
  path = Path(path)
  if not path.exists():
    raise DaslError(f'--predictions {path}: file not found')
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:
    raise DaslError(f'--predictions {path}: cannot read .npy ({type(e).__name__}: {e})') \
        from None


def run_aflw21():
  """The AFLW 21-point benchmark on ``--aflw_dir``; returns the results dict."""
  ds = aflw2000.load_aflw21(FLAGS.aflw_dir)
  n = len(ds)
  if FLAGS.checkpoint:
    predictor = _predictor()
    if predictor.in_channels == 4 and FLAGS['flm'].present and FLAGS.flm == 'detector':
      raise DaslError(f'--aflw_dir {FLAGS.aflw_dir} has no detector landmarks for a '
                      '4-channel model\'s FLM; use --flm bootstrap')
    out = predictor.predict_many(ds.load_crops, n, desc='AFLW')
    lms_crop = out['lms68']
    flm = f'bootstrap x{predictor.bootstrap_iters}' if predictor.in_channels == 4 else None
    lms = evaluation.crop_to_image_landmarks(lms_crop, ds.roi_boxes)
    source = str(FLAGS.checkpoint)
  else:
    pred = _load_predictions(FLAGS.predictions)
    if pred.ndim != 3 or pred.shape[0] != n or pred.shape[1:] not in ((2, 68), (68, 2)):
      raise DaslError(f'--predictions {FLAGS.predictions}: the AFLW 21-point mode needs '
                      f'({n}, 2, 68) crop landmarks for the {n} images of {FLAGS.aflw_dir}, '
                      f'got {pred.shape}')
    lms = protocols.landmarks_from_predictions(
        pred, ds.roi_boxes, 'crop', source=f'--predictions {FLAGS.predictions}').lms68
    flm, source = None, str(FLAGS.predictions)
  res = protocols.score_aflw21(ds, lms, flm)
  if FLAGS.predictions_out:
    crop = np.asarray(camera.image_to_crop(np.asarray(lms, np.float32), ds.roi_boxes))
    np.save(FLAGS.predictions_out, np.swapaxes(crop, 1, 2).astype(np.float32))
  res.update({'subset': n, 'source': source, 'flm': flm, 'aflw_dir': str(FLAGS.aflw_dir),
              'benchmark': 'AFLW 21-point'})
  return res


def run():
  """Parse flags into one evaluation; returns the results dict."""
  if bool(FLAGS.predictions) == bool(FLAGS.checkpoint):
    raise DaslError('give exactly one of --predictions FILE.npy or --checkpoint DIR')
  if FLAGS.batch_size < 1:
    raise DaslError(f'--batch_size must be positive, got {FLAGS.batch_size}')
  if FLAGS.names and not FLAGS.predictions:
    raise DaslError('--names goes with --predictions (it names the rows of the file)')
  if FLAGS.aflw_dir:
    if FLAGS.aflw2000_dir:
      raise DaslError('give --aflw2000_dir (68-point AFLW2000-3D) or --aflw_dir (AFLW '
                      '21-point), not both')
    return run_aflw21()
  root = Path(FLAGS.aflw2000_dir) if FLAGS.aflw2000_dir else assets.asset('aflw2000-3d')
  ds = aflw2000.load(root)
  ds.yaws_of(FLAGS.yaw_file)  # a missing yaw file fails before the model runs
  names = protocols.read_names(FLAGS.names) if FLAGS.names else None
  if FLAGS.checkpoint:
    for name in ('convention', 'param_stats', 'param_kind', 'landmark_frame'):
      if FLAGS[name].present:
        print(f'note: --{name} is ignored with --checkpoint (the checkpoint stores its own)',
              file=sys.stderr)
    predictor = _predictor()
    subset, idx = protocols.aflw2000_indices(ds, FLAGS.subset, predictor.in_channels, FLAGS.flm)
    pred = protocols.predict_aflw2000(predictor, ds, idx, FLAGS.flm, FLAGS.batch_size,
                                      what=f'--subset {subset}' if FLAGS.subset else '')
    source, convention = str(FLAGS.checkpoint), predictor.convention
  else:
    subset, idx = protocols.aflw2000_indices(ds, FLAGS.subset, names=names,
                                             names_source=f'--names {FLAGS.names}')
    arr = _load_predictions(FLAGS.predictions)
    src = f'--predictions {FLAGS.predictions}'
    if names is None and arr.ndim and len(arr) == len(ds) and len(idx) != len(ds):
      arr = arr[idx]
    elif arr.ndim == 0 or len(arr) != len(idx):
      n = arr.shape[0] if arr.ndim else 0
      raise DaslError(f'{src}: {n} rows but ' + (
          f'--names {FLAGS.names} names {len(idx)} images' if names is not None else
          f'the AFLW2000-3D list has {len(ds)} images' +
          (f' ({len(idx)} in --subset {subset})' if len(idx) != len(ds) else '')))
    is_params = arr.ndim == 2 and arr.shape[-1] == 62
    stats = P.load_param_stats(FLAGS.param_stats) if FLAGS.param_stats else None
    if is_params and stats is None:
      raise DaslError(f'{src}: (N, 62) parameters need --param_stats (the whitening '
                      'statistics of the model)')
    frame = FLAGS.landmark_frame
    if frame == 'auto':
      frame = 'image' if (names is not None or (arr.ndim == 3 and 3 in arr.shape[1:])) else 'crop'
    pred = protocols.landmarks_from_predictions(
        arr, ds.roi_boxes[idx], frame, stats, _bfm(FLAGS.bfm) if is_params else None,
        FLAGS.convention, FLAGS.param_kind, src)
    source, convention = str(FLAGS.predictions), (FLAGS.convention if is_params else None)
  res = protocols.score_aflw2000(ds, idx, pred, FLAGS.nme, FLAGS.yaw_file)
  res.update({'subset': int(subset) if subset.isdigit() else subset, 'source': source,
              'convention': convention, 'aflw2000_dir': str(root)})
  if pred.flm:
    res['flm'] = pred.flm
  if FLAGS.predictions_out:
    crop = np.asarray(camera.image_to_crop(pred.lms68, ds.roi_boxes[idx]))
    np.save(FLAGS.predictions_out, np.swapaxes(crop, 1, 2).astype(np.float32))
  return res


def print_results(res):
  print(protocols.protocol_line(res))
  if 'aflw21' in res:
    print(f'AFLW, {res["subset"]} images, 21-point NME (%) by |yaw| bin ({res["source"]})')
    print(evaluation.format_table(res, keys=('aflw21',)))
    return
  print(f'AFLW2000-3D, {res["subset"]} images, 68-point NME (%) by |yaw| bin '
        f'({res["source"]})')
  print(evaluation.format_table(res))
  pose = res.get('pose')
  if pose:
    print(f'head pose MAE (deg): yaw {pose["yaw_mae_all"]:.3f} over {pose["n_all"]} images')
    o = pose.get('originals')
    if o:
      print(f'  on the {o["n"][0]} images with a fitting .mat: yaw {o["yaw"]:.3f}  pitch {o["pitch"]:.3f}  '
            f'roll {o["roll"]:.3f}  mean {o["mean"]:.3f}')


def main(argv):
  # Before JAX starts its threads: keeps XLA:CPU's per-step temp block in the heap
  # (otherwise ~40% of CPU time goes to page faults; benchmarks/README.md).
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  cpu_runtime.split_host_devices(FLAGS.host_devices)
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file at INFO
  try:
    res = run()
  except DaslError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print_results(res)
  if FLAGS.json:
    Path(FLAGS.json).write_text(json.dumps(res, indent=1) + '\n')


if __name__ == '__main__':
  app.run(main)
