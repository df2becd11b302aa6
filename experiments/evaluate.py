r"""Evaluate on AFLW2000-3D: 68-point NME by yaw bin (original and re-annotated GT), pose MAE.

From a model directory (a converted or trained checkpoint):

  python -m experiments.evaluate --checkpoint /tmp/mb05 \
    --aflw2000_dir ../shared/assets/aflw2000-3d [--subset 1998|2000] [--json out.json]

From saved predictions, (N, 62) whitened parameters or (N, 2, 68) crop-pixel
landmarks, N = 2000 (or 1998 with --subset 1998):

  python -m experiments.evaluate --predictions params.npy \
    --param_stats stats.pkl --bfm ../shared/assets/bfm --convention v2 \
    --aflw2000_dir ../shared/assets/aflw2000-3d

3DDFA_V2's mb05 converted with experiments.convert_checkpoint gives, on all
2000 images, original GT: 2.925 / 3.667 / 4.784, mean of bins 3.792.
4-channel models take their FLM channel from detect_testData_1998.txt, which
has no detection for images 1081 and 1798: only --subset 1998 works for them,
unless --flm bootstrap (the landmark map self-bootstrapped from the mean face,
--bootstrap_iters passes; no detector needed).

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

from dasl_jax import aflw2000, assets, evaluation
from dasl_jax import morphable_model as mm
from dasl_jax import params as P
from dasl_jax.errors import DaslError

flags.DEFINE_string('aflw2000_dir', None, 'AFLW2000-3D folder (default: $DASL_ASSETS/aflw2000-3d).')
flags.DEFINE_string('predictions', None, '.npy of (N, 62) whitened params or (N, 2, 68) '
                    'crop-pixel landmarks.')
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


def _restore():
  """The checkpoint of --checkpoint/--step, with --dot_dtype applied to its module."""
  from dasl_jax import checkpoint
  return checkpoint.with_dot_dtype(checkpoint.restore(FLAGS.checkpoint, FLAGS.step),
                                   FLAGS.dot_dtype)


def _load_predictions(path):
  path = Path(path)
  if not path.exists():
    raise DaslError(f'--predictions {path}: file not found')
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:
    raise DaslError(f'--predictions {path}: cannot read .npy ({type(e).__name__}: {e})') \
        from None


def _bfm(path):
  path = Path(path) if path else assets.asset('bfm')
  if not path.exists():
    raise DaslError(f'--bfm {path}: not found (a morphable model folder such as 3DDFA\'s '
                    'bfm/ with keypoints68/, needed to turn parameters into landmarks)')
  return mm.load(path)


def landmarks_from_predictions(pred, param_stats=None, bfm=None, convention='v1',
                               source='predictions'):
  """(N, 62) whitened params or (N, 2, 68) / (N, 68, 2) landmarks -> (lms (N, 68, 2), params or None)."""
  pred = np.asarray(pred)
  if pred.ndim == 2 and pred.shape[1] == 62:
    if param_stats is None:
      raise DaslError(f'{source}: (N, 62) whitened parameters need --param_stats')
    p = param_stats.dewhiten(pred.astype(np.float32))
    lms = np.asarray(mm.landmarks2d(bfm.landmark_model(), p, convention))
    return lms, p
  if pred.ndim == 3 and pred.shape[1:] == (2, 68):
    return np.swapaxes(pred, 1, 2).astype(np.float32), None
  if pred.ndim == 3 and pred.shape[1:] == (68, 2):
    return pred.astype(np.float32), None
  raise DaslError(f'{source}: expected shape (N, 62) whitened parameters or (N, 2, 68) '
                  f'crop landmarks, got {pred.shape}')


def evaluate_landmarks(ds: aflw2000.AFLW2000, idx, lms_crop, params=None):
  """NME tables (and pose MAE when params are given) for images ``idx``.

  Args:
    ds: the test set; idx: (M,) indices into it.
    lms_crop: (M, 68, 2) crop pixels.
    params: optional (M, 62) de-whitened parameters (for head pose).
  Returns:
    results dict (JSON-ready).
  """
  res = {}
  res['original'], _ = evaluation.aflw2000_nme(lms_crop, ds.pts68[idx], ds.roi_boxes[idx],
                                               ds.yaws[idx])
  if ds.reannotated is not None:
    res['reannotated'], _ = evaluation.aflw2000_nme(
        lms_crop, ds.reannotated[idx], ds.roi_boxes[idx], ds.yaws[idx])
  if params is not None:
    angles = evaluation.aflw_pose_angles_from_params(params)
    yaw = evaluation.pose_mae(angles, np.c_[ds.yaws[idx], ds.yaws[idx], ds.yaws[idx]],
                              mask=np.c_[np.ones(len(idx), bool), np.zeros((len(idx), 2), bool)])
    pose = {'yaw_mae_all': yaw['yaw'], 'n_all': len(idx)}
    o_idx, o_ang = aflw2000.load_original_poses(ds.root, ds.names)
    pos = {int(i): k for k, i in enumerate(idx)}
    keep = [k for k, i in enumerate(o_idx) if int(i) in pos]
    if keep:
      rows = [pos[int(o_idx[k])] for k in keep]
      pose['originals'] = evaluation.pose_mae(angles[rows], o_ang[keep])
    res['pose'] = pose
  return res


def _bootstrap_predict(restored, crops_fn, n):
  """4-channel model without detector landmarks: the self-bootstrapped FLM
  (``inference.Predictor``), in batches with a progress bar."""
  from tqdm import tqdm
  from dasl_jax import inference
  pred = inference.Predictor(restored, _bfm(FLAGS.bfm), batch_size=FLAGS.batch_size,
                             bootstrap_iters=FLAGS.bootstrap_iters)
  lms, params = [], []
  for s in tqdm(range(0, n, FLAGS.batch_size), desc=f'bootstrap FLM x{FLAGS.bootstrap_iters}',
                unit='batch'):
    out = pred.predict_crops(crops_fn(np.arange(s, min(s + FLAGS.batch_size, n))))
    lms.append(out['lms68'])
    params.append(out['params'])
  return np.concatenate(lms), np.concatenate(params)


def _run_checkpoint(ds, subset_flag):
  from dasl_jax import predict_batch
  restored = _restore()
  cfg = restored.model_config
  bootstrap = cfg.in_channels == 4 and FLAGS.flm == 'bootstrap'
  subset = int(subset_flag) if subset_flag else (
      1998 if cfg.in_channels == 4 and not bootstrap else 2000)
  points18 = None
  idx = ds.subset_indices(subset)
  if bootstrap:
    lms, params = _bootstrap_predict(restored, lambda ii: ds.load_crops(idx[ii]), len(idx))
    return subset, idx, lms, params, cfg.convention, f'bootstrap x{FLAGS.bootstrap_iters}'
  if cfg.in_channels == 4:
    if ds.detector68 is None:
      raise DaslError(f'{ds.root}: no {aflw2000.DETECTIONS}; a 4-channel model needs detector '
                      'landmarks for its FLM channel')
    missing = idx[~ds.has_detection[idx]]
    if len(missing):
      raise DaslError(f'--subset {subset}: this is a 4-channel model and {aflw2000.DETECTIONS} '
                      f'has no landmarks for images {missing.tolist()} (its FLM input); '
                      'use --subset 1998 (or --flm bootstrap)')
    points18 = predict_batch.flm_points(ds.detector68[idx])
  fn = predict_batch.make_predict_fn(restored.module, restored.param_stats, _bfm(FLAGS.bfm),
                                     cfg.convention, cfg.in_channels)
  out = predict_batch.predict_all(fn, restored.variables, lambda ii: ds.load_crops(idx[ii]),
                                  len(idx), FLAGS.batch_size, points18, desc='AFLW2000-3D')
  return (subset, idx, out['lms'], out['params'], cfg.convention,
          'detector' if cfg.in_channels == 4 else None)


def run_aflw21():
  """The AFLW 21-point benchmark on ``--aflw_dir``; returns the results dict."""
  from dasl_jax import predict_batch
  ds = aflw2000.load_aflw21(FLAGS.aflw_dir)
  n = len(ds)
  if FLAGS.checkpoint:
    restored = _restore()
    cfg = restored.model_config
    if cfg.in_channels == 4:
      if FLAGS['flm'].present and FLAGS.flm == 'detector':
        raise DaslError(f'--aflw_dir {FLAGS.aflw_dir} has no detector landmarks for a '
                        '4-channel model\'s FLM; use --flm bootstrap')
      lms, _ = _bootstrap_predict(restored, ds.load_crops, n)
      flm = f'bootstrap x{FLAGS.bootstrap_iters}'
    else:
      fn = predict_batch.make_predict_fn(restored.module, restored.param_stats, _bfm(FLAGS.bfm),
                                         cfg.convention, cfg.in_channels)
      lms = predict_batch.predict_all(fn, restored.variables, ds.load_crops, n, FLAGS.batch_size,
                                      desc='AFLW')['lms']
      flm = None
    source = str(FLAGS.checkpoint)
  else:
    pred = _load_predictions(FLAGS.predictions)
    if pred.ndim != 3 or pred.shape[0] != n or pred.shape[1:] not in ((2, 68), (68, 2)):
      raise DaslError(f'--predictions {FLAGS.predictions}: the AFLW 21-point mode needs '
                      f'({n}, 2, 68) crop landmarks for the {n} images of {FLAGS.aflw_dir}, '
                      f'got {pred.shape}')
    lms = landmarks_from_predictions(pred, source=f'--predictions {FLAGS.predictions}')[0]
    flm, source = None, str(FLAGS.predictions)
  lms_img = evaluation.crop_to_image_landmarks(lms, ds.roi_boxes)
  summary, _ = evaluation.aflw21_nme(lms_img, ds.pts21, ds.yaws, ds.visible)
  if FLAGS.predictions_out:
    np.save(FLAGS.predictions_out, np.swapaxes(lms, 1, 2).astype(np.float32))
  return {'aflw21': summary, 'subset': n, 'source': source, 'flm': flm,
          'aflw_dir': str(FLAGS.aflw_dir), 'benchmark': 'AFLW 21-point'}


def run():
  """Parse flags into one evaluation; returns the results dict."""
  if bool(FLAGS.predictions) == bool(FLAGS.checkpoint):
    raise DaslError('give exactly one of --predictions FILE.npy or --checkpoint DIR')
  if FLAGS.batch_size < 1:
    raise DaslError(f'--batch_size must be positive, got {FLAGS.batch_size}')
  if FLAGS.aflw_dir:
    if FLAGS.aflw2000_dir:
      raise DaslError('give --aflw2000_dir (68-point AFLW2000-3D) or --aflw_dir (AFLW '
                      '21-point), not both')
    return run_aflw21()
  root = Path(FLAGS.aflw2000_dir) if FLAGS.aflw2000_dir else assets.asset('aflw2000-3d')
  ds = aflw2000.load(root)
  if FLAGS.checkpoint:
    for name in ('convention', 'param_stats'):
      if FLAGS[name].present:
        print(f'note: --{name} is ignored with --checkpoint (the checkpoint stores its own)',
              file=sys.stderr)
    subset, idx, lms, params, convention, flm = _run_checkpoint(ds, FLAGS.subset)
    source = str(FLAGS.checkpoint)
  else:
    subset = int(FLAGS.subset) if FLAGS.subset else 2000
    idx = ds.subset_indices(subset)
    pred = _load_predictions(FLAGS.predictions)
    if pred.ndim == 0 or pred.shape[0] not in (len(ds), len(idx)):
      n = pred.shape[0] if pred.ndim else 0
      raise DaslError(f'--predictions {FLAGS.predictions}: {n} rows but the AFLW2000-3D list '
                      f'has {len(ds)} images' + (f' ({len(idx)} in --subset {subset})'
                                                 if len(idx) != len(ds) else ''))
    stats = P.load_param_stats(FLAGS.param_stats) if FLAGS.param_stats else None
    is_params = pred.ndim == 2 and pred.shape[-1] == 62
    if is_params and stats is None:
      raise DaslError(f'--predictions {FLAGS.predictions}: (N, 62) whitened parameters need '
                      '--param_stats (the whitening statistics of the model)')
    lms, params = landmarks_from_predictions(
        pred, stats, _bfm(FLAGS.bfm) if is_params else None, FLAGS.convention,
        f'--predictions {FLAGS.predictions}')
    if len(lms) == len(ds) and len(idx) != len(ds):
      lms = lms[idx]
      params = None if params is None else params[idx]
    convention = FLAGS.convention if is_params else None
    source = str(FLAGS.predictions)
  res = evaluate_landmarks(ds, idx, lms, params)
  res.update({'subset': subset, 'source': source, 'convention': convention,
              'aflw2000_dir': str(root)})
  if FLAGS.checkpoint and flm:
    res['flm'] = flm
  if FLAGS.predictions_out:
    np.save(FLAGS.predictions_out, np.swapaxes(lms, 1, 2).astype(np.float32))
  return res


def print_results(res):
  if 'aflw21' in res:
    flm = f', FLM {res["flm"]}' if res.get('flm') else ''
    print(f'AFLW, {res["subset"]} images, 21-point NME (%) by |yaw| bin ({res["source"]}{flm})')
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
