"""One evaluation as ``experiments.evaluate`` describes it: a :class:`Request`
(checkpoint or saved predictions, benchmark folder, protocol variant) in, a
JSON-ready results dict out (:func:`run`), and the printed table
(:func:`format_results`). Notebooks can build a ``Request`` directly.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from dasl_jax import assets, evaluation
from dasl_jax.evaluation import aflw2000
from dasl_jax.geometry import camera
from dasl_jax.evaluation import protocols
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError


@dataclasses.dataclass
class Request:
  """The command's flags (same names, same defaults; see ``experiments/evaluate.py``)."""
  checkpoint: Optional[str] = None
  predictions: Optional[str] = None
  aflw2000_dir: Optional[str] = None
  aflw_dir: Optional[str] = None
  aflw2000_images: Optional[str] = None
  detector: str = 'faceboxes'
  faceboxes_weights: Optional[str] = None
  names: Optional[str] = None
  landmark_frame: str = 'auto'
  param_kind: str = 'whitened'
  yaw_file: str = 'default'
  nme: str = '2d'
  step: Optional[int] = None
  param_stats: Optional[str] = None
  bfm: Optional[str] = None
  convention: str = 'v1'
  subset: Optional[str] = None
  batch_size: int = 128
  predictions_out: Optional[str] = None
  flm: str = 'detector'
  flm_given: bool = False  # --flm was set explicitly
  bootstrap_iters: int = 2
  dot_dtype: str = 'float32'
  backend: str = 'jax'
  onnx: Optional[str] = None
  refine: int = 1
  tta: str = 'none'
  # flags given that a checkpoint overrides (a note is printed for each)
  ignored_with_checkpoint: Tuple[str, ...] = ()


def _bfm(path):
  path = Path(path) if path else assets.asset('bfm')
  if not path.exists():
    raise DaslError(f'--bfm {path}: not found (a morphable model folder such as 3DDFA\'s '
                    'bfm/ with keypoints68/, needed to turn parameters into landmarks)')
  return mm.load(path)


BACKENDS = ('jax', 'onnxruntime')


def _predictor(req):
  """The model to run: ``--checkpoint``/``--step`` with ``--dot_dtype`` applied as an
  ``inference.Predictor`` (``--backend jax``) or its ONNX graph on onnxruntime
  (``--backend onnxruntime``), or an exported ``--onnx FILE`` (float or int8)."""
  from dasl_jax import inference
  from dasl_jax.io import checkpoint
  if req.bootstrap_iters < 1:
    raise DaslError(f'--bootstrap_iters must be >= 1, got {req.bootstrap_iters}')
  backend = _backend(req)
  if req.onnx:
    from dasl_jax.inference.onnx import OnnxPredictor
    return OnnxPredictor.from_file(req.onnx, batch_size=req.batch_size,
                                   bootstrap_iters=req.bootstrap_iters)
  restored = checkpoint.with_dot_dtype(checkpoint.restore(req.checkpoint, req.step),
                                       req.dot_dtype)
  if backend == 'onnxruntime':
    from dasl_jax.inference.onnx import OnnxPredictor
    return OnnxPredictor(restored, _bfm(req.bfm), batch_size=req.batch_size,
                         bootstrap_iters=req.bootstrap_iters)
  return inference.Predictor(restored, _bfm(req.bfm), batch_size=req.batch_size,
                             bootstrap_iters=req.bootstrap_iters, tta=req.tta)


def _backend(req):
  """--backend, checked against --onnx and --dot_dtype (an --onnx file runs on onnxruntime)."""
  if req.backend not in BACKENDS:
    raise DaslError(f'--backend must be one of {", ".join(BACKENDS)}, got {req.backend!r}')
  if req.onnx and req.backend != 'onnxruntime':
    raise DaslError(f'--onnx {req.onnx} runs on onnxruntime: drop --backend {req.backend}')
  if (req.onnx or req.backend == 'onnxruntime') and req.dot_dtype != 'float32':
    raise DaslError('--dot_dtype bfloat16: only with --backend jax (the ONNX graph is float32)')
  return req.backend


def _load_predictions(path):
  path = Path(path)
  if not path.exists():
    raise DaslError(f'--predictions {path}: file not found')
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:
    raise DaslError(f'--predictions {path}: cannot read .npy ({type(e).__name__}: {e})') \
        from None


def run_aflw21(req):
  """The AFLW 21-point benchmark on ``--aflw_dir``; returns the results dict."""
  ds = aflw2000.load_aflw21(req.aflw_dir)
  n = len(ds)
  if req.checkpoint or req.onnx:
    predictor = _predictor(req)
    if predictor.in_channels == 4 and req.flm_given and req.flm == 'detector':
      raise DaslError(f'--aflw_dir {req.aflw_dir} has no detector landmarks for a '
                      '4-channel model\'s FLM; use --flm bootstrap')
    out = predictor.predict_many(ds.load_crops, n, desc='AFLW')
    lms_crop = out['lms68']
    flm = f'bootstrap x{predictor.bootstrap_iters}' if predictor.in_channels == 4 else None
    lms = evaluation.crop_to_image_landmarks(lms_crop, ds.roi_boxes)
    source = str(req.checkpoint or req.onnx)
  else:
    pred = _load_predictions(req.predictions)
    if pred.ndim != 3 or pred.shape[0] != n or pred.shape[1:] not in ((2, 68), (68, 2)):
      raise DaslError(f'--predictions {req.predictions}: the AFLW 21-point mode needs '
                      f'({n}, 2, 68) crop landmarks for the {n} images of {req.aflw_dir}, '
                      f'got {pred.shape}')
    lms = protocols.landmarks_from_predictions(
        pred, ds.roi_boxes, 'crop', source=f'--predictions {req.predictions}').lms68
    flm, source = None, str(req.predictions)
  res = protocols.score_aflw21(ds, lms, flm)
  if req.predictions_out:
    crop = np.asarray(camera.image_to_crop(np.asarray(lms, np.float32), ds.roi_boxes))
    np.save(req.predictions_out, np.swapaxes(crop, 1, 2).astype(np.float32))
  res.update({'subset': n, 'source': source, 'flm': flm, 'aflw_dir': str(req.aflw_dir),
              'benchmark': 'AFLW 21-point'})
  if req.checkpoint or req.onnx:
    res['backend'] = predictor.describe()
  return res


def run_full_images(req: Request):
  """AFLW2000-3D from the full images with a detector (``evaluation.full_images``)."""
  from dasl_jax.evaluation import full_images
  from dasl_jax.inference import make_detector
  if not (req.checkpoint or req.onnx):
    raise DaslError('--aflw2000_images needs --checkpoint or --onnx (the model runs on the '
                    'detected faces)')
  # before the model loads
  detector = make_detector(req.detector, req.faceboxes_weights, backend=_backend(req))
  root = Path(req.aflw2000_dir) if req.aflw2000_dir else assets.asset('aflw2000-3d')
  ds = aflw2000.load(root)
  predictor = _predictor(req)
  res = full_images.evaluate_full_images(predictor, detector, ds, req.aflw2000_images,
                                         req.detector, req.batch_size, req.yaw_file,
                                         refine=req.refine)
  res.update({'benchmark': 'AFLW2000-3D full images', 'source': str(req.checkpoint or req.onnx),
              'aflw2000_dir': str(root), 'aflw2000_images': str(req.aflw2000_images)})
  return res


def run(req: Request):
  """One evaluation as the command's flags describe it; returns the results dict
  (with ``tta``, the test-time averaging of a model's predictions)."""
  res = _run(req)
  if req.checkpoint or req.onnx:
    res['tta'] = req.tta
    if 'protocol' in res:
      res['protocol']['tta'] = req.tta
  return res


def _run(req: Request):
  if sum(map(bool, (req.predictions, req.checkpoint, req.onnx))) != 1:
    raise DaslError('give exactly one of --predictions FILE.npy, --checkpoint DIR or '
                    '--onnx FILE.onnx')
  if req.refine < 0:
    raise DaslError(f'--refine must be >= 0, got {req.refine}')
  from dasl_jax.inference import core
  if req.tta not in core.TTA:
    raise DaslError(f'--tta must be one of {", ".join(core.TTA)}, got {req.tta!r}')
  if req.tta != 'none' and not req.checkpoint:
    raise DaslError(f'--tta {req.tta} goes with --checkpoint (saved --predictions are '
                    'scored as they are; an --onnx file runs on onnxruntime, without it)')
  if req.tta != 'none' and req.backend != 'jax':
    raise DaslError(f'--tta {req.tta}: only with --backend jax')
  _backend(req)
  if req.batch_size < 1:
    raise DaslError(f'--batch_size must be positive, got {req.batch_size}')
  if req.names and not req.predictions:
    raise DaslError('--names goes with --predictions (it names the rows of the file)')
  if req.aflw2000_images:
    return run_full_images(req)
  if req.aflw_dir:
    if req.aflw2000_dir:
      raise DaslError('give --aflw2000_dir (68-point AFLW2000-3D) or --aflw_dir (AFLW '
                      '21-point), not both')
    return run_aflw21(req)
  root = Path(req.aflw2000_dir) if req.aflw2000_dir else assets.asset('aflw2000-3d')
  ds = aflw2000.load(root)
  ds.yaws_of(req.yaw_file)  # a missing yaw file fails before the model runs
  names = protocols.read_names(req.names) if req.names else None
  backend = None
  if req.checkpoint or req.onnx:
    for name in req.ignored_with_checkpoint:
      print(f'note: --{name} is ignored with --{"checkpoint" if req.checkpoint else "onnx"} '
            '(the model stores its own)', file=sys.stderr)
    predictor = _predictor(req)
    subset, idx = protocols.aflw2000_indices(ds, req.subset, predictor.in_channels, req.flm)
    pred = protocols.predict_aflw2000(predictor, ds, idx, req.flm, req.batch_size,
                                      what=f'--subset {subset}' if req.subset else '')
    source, convention = str(req.checkpoint or req.onnx), predictor.convention
    backend = predictor.describe()
  else:
    subset, idx = protocols.aflw2000_indices(ds, req.subset, names=names,
                                             names_source=f'--names {req.names}')
    arr = _load_predictions(req.predictions)
    src = f'--predictions {req.predictions}'
    if names is None and arr.ndim and len(arr) == len(ds) and len(idx) != len(ds):
      arr = arr[idx]
    elif arr.ndim == 0 or len(arr) != len(idx):
      n = arr.shape[0] if arr.ndim else 0
      raise DaslError(f'{src}: {n} rows but ' + (
          f'--names {req.names} names {len(idx)} images' if names is not None else
          f'the AFLW2000-3D list has {len(ds)} images' +
          (f' ({len(idx)} in --subset {subset})' if len(idx) != len(ds) else '')))
    is_params = arr.ndim == 2 and arr.shape[-1] == 62
    stats = P.load_param_stats(req.param_stats) if req.param_stats else None
    if is_params and stats is None:
      raise DaslError(f'{src}: (N, 62) parameters need --param_stats (the whitening '
                      'statistics of the model)')
    frame = req.landmark_frame
    if frame == 'auto':
      frame = 'image' if (names is not None or (arr.ndim == 3 and 3 in arr.shape[1:])) else 'crop'
    pred = protocols.landmarks_from_predictions(
        arr, ds.roi_boxes[idx], frame, stats, _bfm(req.bfm) if is_params else None,
        req.convention, req.param_kind, src)
    source, convention = str(req.predictions), (req.convention if is_params else None)
  res = protocols.score_aflw2000(ds, idx, pred, req.nme, req.yaw_file)
  res.update({'subset': int(subset) if subset.isdigit() else subset, 'source': source,
              'convention': convention, 'aflw2000_dir': str(root)})
  if backend:
    res['backend'] = backend
  if pred.flm:
    res['flm'] = pred.flm
  if req.predictions_out:
    crop = np.asarray(camera.image_to_crop(pred.lms68, ds.roi_boxes[idx]))
    np.save(req.predictions_out, np.swapaxes(crop, 1, 2).astype(np.float32))
  return res


def format_results(res) -> str:
  """The protocol line, the NME table and the pose lines, as the command prints them."""
  if res.get('benchmark') == 'AFLW2000-3D full images':
    from dasl_jax.evaluation.full_images import format_full_images
    return format_full_images(res)
  lines = [protocols.protocol_line(res)]
  if res.get('backend'):
    lines.append(f'backend: {res["backend"]}')
  if 'aflw21' in res:
    lines.append(f'AFLW, {res["subset"]} images, 21-point NME (%) by |yaw| bin '
                 f'({res["source"]})')
    lines.append(evaluation.format_table(res, keys=('aflw21',)))
    return '\n'.join(lines)
  lines.append(f'AFLW2000-3D, {res["subset"]} images, 68-point NME (%) by |yaw| bin '
               f'({res["source"]})')
  lines.append(evaluation.format_table(res))
  pose = res.get('pose')
  if pose:
    lines.append(f'head pose MAE (deg): yaw {pose["yaw_mae_all"]:.3f} over {pose["n_all"]} '
                 'images')
    o = pose.get('originals')
    if o:
      lines.append(f'  on the {o["n"][0]} images with a fitting .mat: yaw {o["yaw"]:.3f}  '
                   f'pitch {o["pitch"]:.3f}  roll {o["roll"]:.3f}  mean {o["mean"]:.3f}')
  return '\n'.join(lines)
