r"""Photo and video to faces end to end on the CPU: JAX against onnxruntime (float, int8), interleaved.

  python -m benchmarks.pipeline_e2e --checkpoint DIR [--int8 MODEL_int8.onnx]
      [--calibration DIR] [--images 2000] [--chunk 40] [--refine 1] [--frames 60]
      [--video_rounds 3] [--detect_every 0,5,10,30] [--regressor_rounds 5] [--json OUT]

Per image, on the full AFLW2000-3D images (450x450, decoded beforehand, so JPEG
decoding is not counted): FaceBoxes with 3DDFA_V2's settings, then for the faces
found the box crop, the regression, ``--refine`` landmark re-crop passes, the 68
landmarks in image pixels and their depth: ``inference.predict_image``, what
``experiments.predict`` does for a photo before it writes files. Detection and the
rest are timed apart. The images go in chunks of ``--chunk``; each chunk runs
through every contender, the order rotating from chunk to chunk, so a change of
load on a shared machine hits all of them alike. Reported per contender: mean
and median ms per image for detection, for the rest (crop + regression + refine +
landmarks) and in total; ratios against JAX.

Per frame: a moved-photo video (an AFLW2000-3D photo moved by
``video.smooth_motion`` into 480x360 frames with pixel noise, as
``benchmarks.video_tracking`` makes them) through ``inference.Runner.video``
without overlays (decode, detect or track, regress, smooth, JSON): frames per
second per contender over ``--video_rounds`` interleaved rounds; and, for the
onnxruntime float contender in the same rounds, one run per ``--detect_every``
value and one detecting on every frame (what looking for new faces costs).

The regressor alone (``--regressor_rounds``, 0 = off): ``predict_crops`` on one
AFLW2000-3D crop and on 128 (the predictors' batches of 32), each contender in
turn within a round, the order rotating: ms per call (median over rounds), crops
per second, ratios against JAX. This is where float and int8 differ; detection
runs the same float FaceBoxes for both onnxruntime contenders.

Contenders: ``jax`` (FaceBoxes in Flax and the regressor, jitted), ``onnxruntime``
(both as float32 ONNX graphs built from the weights), ``onnxruntime_int8``
(FaceBoxes float, the regressor int8: ``--int8 FILE``, or quantized here from
``--calibration``, default ``$DASL_ASSETS/aflw-wild/images``; ``--int8 none``
leaves it out). onnxruntime uses its default intra-op threads (one per core),
JAX its default (all cores). The JSON has the machine (CPU model, load averages
before and after), versions and the command.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common


def _contenders(checkpoint, int8, calibration, tmp):
  """name -> (detector, predictor), and the int8 file (or None)."""
  from dasl_jax import inference
  from dasl_jax.inference import onnx as onnx_graphs
  from dasl_jax.io import checkpoint as ckpt
  restored = ckpt.restore(checkpoint)
  models = inference.face_models(restored)
  fb_jax = inference.make_detector('faceboxes', backend='jax')
  fb_ort = inference.make_detector('faceboxes', backend='onnxruntime')
  out = {'jax': (fb_jax, inference.Predictor(restored, models.landmarks)),
         'onnxruntime': (fb_ort, onnx_graphs.OnnxPredictor(restored, models.landmarks))}
  if int8 != 'none':
    if not int8:
      from dasl_jax.assets import asset
      from dasl_jax.inference import quantize
      crops, files = quantize.calibration_crops(calibration or asset('aflw-wild', 'images'))
      flt = onnx_graphs.export_onnx(restored, models.landmarks, tmp / 'float.onnx')
      int8 = quantize.quantize_regressor(flt, tmp / 'int8.onnx', crops,
                                         note=f'{len(files)} crops')
    out['onnxruntime_int8'] = (fb_ort, onnx_graphs.OnnxPredictor.from_file(int8))
  return out, (str(int8) if int8 != 'none' else None)


def _warm(contenders, image, refine):
  """Compile and warm every shape a photo can need (1 to 8 faces)."""
  from dasl_jax.inference import predict_image
  for det, pred in contenders.values():
    predict_image(pred, image, det, refine=refine)
    for n in (1, 2, 4, 8):
      pred.predict_crops(np.zeros((n, 120, 120, 3), np.uint8))


def time_images(contenders, images_dir, names, chunk, refine, progress=True):
  """Per contender: (n,) seconds of detection and of the rest, and faces found."""
  from tqdm import tqdm
  from dasl_jax.inference import predict_image
  from dasl_jax.io.media import load_image
  keys = list(contenders)
  det_s = {k: [] for k in keys}
  rest_s = {k: [] for k in keys}
  faces = {k: 0 for k in keys}
  bar = tqdm(total=len(names) * len(keys), desc='images x contenders', unit='img',
             disable=not progress)
  for c, start in enumerate(range(0, len(names), chunk)):
    imgs = [load_image(images_dir / n) for n in names[start:start + chunk]]
    order = keys[c % len(keys):] + keys[:c % len(keys)]
    for k in order:
      det, pred = contenders[k]
      for img in imgs:
        t0 = time.perf_counter()
        boxes = np.asarray([d.box for d in det.detections(img)], np.float64).reshape(-1, 5)
        t1 = time.perf_counter()
        found, _ = predict_image(pred, img, boxes=boxes, refine=refine)
        t2 = time.perf_counter()
        det_s[k].append(t1 - t0)
        rest_s[k].append(t2 - t1)
        faces[k] += len(found)
      bar.update(len(imgs))
  bar.close()
  return det_s, rest_s, faces


def time_regressor(contenders, crops, rounds, calls=(20, 3)):
  """Per contender and batch (1 and ``len(crops)``): median ms per ``predict_crops``
  call over ``rounds`` interleaved rounds of ``calls`` calls each."""
  batches = {1: crops[:1], len(crops): crops}
  keys = list(contenders)
  secs = {(k, b): [] for k in keys for b in batches}
  for r in range(rounds):
    order = keys[r % len(keys):] + keys[:r % len(keys)]
    for k in order:
      pred = contenders[k][1]
      for (b, x), n in zip(batches.items(), calls):
        pred.predict_crops(x)  # warm this shape
        t0 = time.perf_counter()
        for _ in range(n):
          pred.predict_crops(x)
        secs[(k, b)].append((time.perf_counter() - t0) / n)
  out = {}
  for k in keys:
    out[k] = {}
    for b in batches:
      ms = 1e3 * float(np.median(secs[(k, b)]))
      out[k][f'batch{b}'] = {'ms_per_call': ms, 'crops_per_s': 1e3 * b / ms,
                             'rounds_ms': [1e3 * t for t in secs[(k, b)]]}
  return out


def _video_runners(checkpoint, int8, out):
  from dasl_jax import inference
  kw = dict(overlay=False, meshes=False)
  runners = {'jax': inference.Runner(checkpoint, out / 'jax', **kw),
             'onnxruntime': inference.Runner(checkpoint, out / 'ort', backend='onnxruntime', **kw)}
  if int8:
    runners['onnxruntime_int8'] = inference.Runner(None, out / 'int8', backend='onnxruntime',
                                                   onnx=int8, **kw)
  return runners


def time_video(runners, path, rounds, detect_every, default_every):
  """Frames per second: each runner at the default, and the onnxruntime runner at
  each ``detect_every`` and detecting on every frame, interleaved over rounds."""
  arms = [(k, dict(detect_every=default_every)) for k in runners]
  arms += [('onnxruntime', dict(detect_every=e)) for e in detect_every if e != default_every]
  arms += [('onnxruntime', dict(track=False))]
  secs = {i: [] for i in range(len(arms))}
  modes = {}
  for r in range(rounds):
    order = list(range(len(arms)))
    order = order[r % len(order):] + order[:r % len(order)]
    for i in order:
      k, kw = arms[i]
      t0 = time.perf_counter()
      rec = runners[k].video(path, smooth=3, **kw)
      secs[i].append(time.perf_counter() - t0)
      modes[i] = (len(rec['frames']), sum(not f['mode'].startswith('track')
                                          for f in rec['frames']),
                  sum(f['mode'] == 'track+detect' for f in rec['frames']))
  out = []
  for i, (k, kw) in enumerate(arms):
    n, detects, periodic = modes[i]
    s = float(np.median(secs[i]))
    out.append({'contender': k, **{a: v for a, v in kw.items()}, 'frames': n,
                'detector_frames': detects + periodic, 'median_s': s,
                'ms_per_frame': 1e3 * s / n, 'fps': n / s, 'rounds_s': secs[i]})
  return out


def _summary(det_s, rest_s, faces):
  res = {}
  for k in det_s:
    d, r = np.asarray(det_s[k]), np.asarray(rest_s[k])
    t = d + r
    res[k] = {'images': int(len(t)), 'faces': int(faces[k]),
              'detect_ms_mean': 1e3 * float(d.mean()), 'detect_ms_median': 1e3 * float(np.median(d)),
              'rest_ms_mean': 1e3 * float(r.mean()), 'rest_ms_median': 1e3 * float(np.median(r)),
              'total_ms_mean': 1e3 * float(t.mean()), 'total_ms_median': 1e3 * float(np.median(t)),
              'rest_ms_per_face': 1e3 * float(r.sum()) / max(int(faces[k]), 1)}
  return res


def run(args):
  from dasl_jax.assets import asset
  from dasl_jax.evaluation import aflw2000
  from dasl_jax.inference.video import DEFAULT_DETECT_EVERY
  from benchmarks.video_tracking import make_video
  load_before = common.machine().get('load_average_1_5_15min')
  tmp = Path(tempfile.mkdtemp(prefix='pipeline_e2e_'))
  root = Path(args.aflw2000_dir) if args.aflw2000_dir else asset('aflw2000-3d')
  ds = aflw2000.load(root)
  images_dir = root / aflw2000.FULL_IMAGES
  names = ds.names[:args.images]
  contenders, int8 = _contenders(args.checkpoint, args.int8, args.calibration, tmp)
  from dasl_jax.io.media import load_image
  _warm(contenders, load_image(images_dir / names[0]), args.refine)
  det_s, rest_s, faces = time_images(contenders, images_dir, names, args.chunk, args.refine)
  photos = _summary(det_s, rest_s, faces)
  for k, v in photos.items():
    print(f'{k:18s} per image: detect {v["detect_ms_mean"]:6.2f} ms, crop+regress+refine+'
          f'landmarks {v["rest_ms_mean"]:6.2f} ms ({v["rest_ms_per_face"]:.2f} ms a face), '
          f'total {v["total_ms_mean"]:6.2f} ms mean / {v["total_ms_median"]:6.2f} median; '
          f'{v["faces"]} faces', flush=True)
  regressor = {}
  if args.regressor_rounds:
    crops = ds.load_crops(np.arange(128))
    regressor = time_regressor(contenders, crops, args.regressor_rounds)
    for k, v in regressor.items():
      print(f'{k:18s} regressor: ' + ', '.join(
          f'{b} {x["ms_per_call"]:7.2f} ms ({x["crops_per_s"]:.0f} crops/s)'
          for b, x in v.items()), flush=True)
  video = []
  if args.frames:
    path = tmp / 'moved.avi'
    make_video(root / aflw2000.FULL_IMAGES, args.video_image, args.frames, path, seed=0)
    warm = tmp / 'warm.avi'
    make_video(root / aflw2000.FULL_IMAGES, args.video_image, 3, warm, seed=1)
    runners = _video_runners(args.checkpoint, int8, tmp / 'video')
    for r in runners.values():
      r.video(warm, smooth=3)
      r.video(warm, smooth=3, track=False)
    every = [int(e) for e in args.detect_every.split(',') if e != '']
    video = time_video(runners, path, args.video_rounds, every, DEFAULT_DETECT_EVERY)
    for v in video:
      how = (f'detect_every {v["detect_every"]}' if 'detect_every' in v
             else 'detector on every frame')
      print(f'{v["contender"]:18s} video, {how:24s}: {v["ms_per_frame"]:6.2f} ms/frame '
            f'({v["fps"]:.1f} fps), detector on {v["detector_frames"]}/{v["frames"]} frames',
            flush=True)
  ref = photos['jax']['total_ms_mean']
  ratios = {f'{k}_speed_vs_jax_per_image': ref / v['total_ms_mean'] for k, v in photos.items()
            if k != 'jax'}
  if video:
    jv = next(v['fps'] for v in video if v['contender'] == 'jax')
    seen = set()
    for v in video:
      if v['contender'] != 'jax' and v['contender'] not in seen and 'detect_every' in v:
        seen.add(v['contender'])
        ratios[f'{v["contender"]}_speed_vs_jax_per_frame'] = v['fps'] / jv
  for k, v in regressor.items():
    if k != 'jax':
      for b, x in v.items():
        ratios[f'{k}_regressor_{b}_speed_vs_jax'] = (regressor['jax'][b]['ms_per_call']
                                                     / x['ms_per_call'])
  if 'onnxruntime_int8' in regressor:
    for b, x in regressor['onnxruntime_int8'].items():
      ratios[f'int8_regressor_{b}_speed_vs_float'] = (
          regressor['onnxruntime'][b]['ms_per_call'] / x['ms_per_call'])
  for k, v in ratios.items():
    print(f'{k}: {v:.2f}x')
  return {'benchmark': 'pipeline_e2e',
          'setup': {'checkpoint': str(args.checkpoint), 'int8': int8, 'images': len(names),
                    'images_dir': str(images_dir), 'chunk': args.chunk, 'refine': args.refine,
                    'video': {'photo': args.video_image, 'frames': args.frames,
                              'size': [480, 360], 'rounds': args.video_rounds, 'smooth': 3},
                    'regressor_rounds': args.regressor_rounds,
                    'threads': 'onnxruntime default (one per core), JAX default'},
          'load_average_before': load_before,
          'load_average_after': common.machine().get('load_average_1_5_15min'),
          'photos': photos, 'regressor': regressor, 'video': video, 'ratios': ratios,
          'note': 'JPEG decoding not counted on photos; ratios from one interleaved run count, '
                  'absolute figures move with the CPU and its load'}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--checkpoint', required=True, help='model work directory (e.g. mb05 converted)')
  ap.add_argument('--int8', default='', help='an int8 .onnx (experiments.export --quantize '
                  'int8); empty: quantize here from --calibration; none: no int8 contender')
  ap.add_argument('--calibration', default=None, help='crops to quantize on (default '
                  '$DASL_ASSETS/aflw-wild/images)')
  ap.add_argument('--aflw2000_dir', default=None, help='default $DASL_ASSETS/aflw2000-3d')
  ap.add_argument('--images', type=int, default=2000, help='first N of the full images')
  ap.add_argument('--chunk', type=int, default=40, help='images per interleaved chunk')
  ap.add_argument('--refine', type=int, default=1, help='landmark re-crop passes')
  ap.add_argument('--frames', type=int, default=60, help='video frames (0: no video part)')
  ap.add_argument('--video_image', default='image00043', help='AFLW2000-3D photo to move')
  ap.add_argument('--video_rounds', type=int, default=3)
  ap.add_argument('--detect_every', default='0,5,10,30', help='onnxruntime video arms')
  ap.add_argument('--regressor_rounds', type=int, default=5,
                  help='interleaved rounds of the regressor alone at batch 1 and 128 (0: off)')
  ap.add_argument('--json', default='')
  args = ap.parse_args()
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  common.finish(lambda: run(args), args.json)


if __name__ == '__main__':
  main()
