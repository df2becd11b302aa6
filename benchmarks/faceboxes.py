r"""FaceBoxes port: agreement with the PyTorch original, and latency on a 720p frame.

  python -m benchmarks.faceboxes [--json OUT.json] [--repeats 20] [--limit N]

(a) Runs the detector over every image that ``pretrained/faceboxes_reference.json``
lists (the 2,000 ``aflw2000-3d/AFLW2000/*.jpg`` and the demo photos) and
compares with the boxes 3DDFA_V2's PyTorch code gave: reference boxes matched
(every corner within 1 px, score within 0.01; ``faceboxes.compare_boxes``),
largest corner and score differences, images with extra or missing faces.
(b) Times ``FaceBoxesDetector.detect`` (resize, mean, jitted network,
decoding, NMS) and the jitted network alone on a 1280x720 frame made by resizing
``images/emma.jpg`` (the detector scales it to 1080x607, its width limit).
PyTorch is timed only if it imports (the project does not need it); the JSON
says when it does not.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import cv2
import jax
import numpy as np

from benchmarks import common


def agreement(det, ref, root, limit=0):
  """Compare ``det`` with the reference over its images (``limit``: first N only)."""
  from dasl_jax.inference import faceboxes as F
  names = sorted(ref)
  if limit:
    names = names[:limit]
  tot = dict(images=0, reference_boxes=0, detected_boxes=0, matched=0, max_corner_px=0.0,
             max_score_diff=0.0)
  extra, missing, unread = [], [], []
  t0 = time.perf_counter()
  for name in names:
    img = cv2.imread(str(root / name))
    if img is None:
      unread.append(name)
      continue
    got, want = det.detect(img), np.asarray(ref[name], np.float64).reshape(-1, 5)
    r = F.compare_boxes(got, want, px=1.0, score=0.01)
    tot['images'] += 1
    tot['reference_boxes'] += len(want)
    tot['detected_boxes'] += len(got)
    tot['matched'] += r['matched']
    tot['max_corner_px'] = max(tot['max_corner_px'], r['max_corner'])
    tot['max_score_diff'] = max(tot['max_score_diff'], r['max_score'])
    if r['extra']:
      extra.append({'image': name, 'extra': r['extra'], 'got': got.round(3).tolist()})
    if r['missing']:
      missing.append({'image': name, 'missing': r['missing'], 'got': got.round(3).tolist(),
                      'reference': want.tolist()})
  tot.update(images_with_extra_faces=len(extra), images_with_missing_faces=len(missing),
             extra=extra, missing=missing, unreadable=unread,
             seconds=round(time.perf_counter() - t0, 1),
             tolerance={'corner_px': 1.0, 'score': 0.01})
  return tot


def frame_720p(root):
  """A 1280x720 BGR frame: the first demo photo resized (its aspect is close)."""
  img = cv2.imread(str(root / 'images' / 'emma.jpg'))
  if img is None:
    from dasl_jax.errors import DaslError
    raise DaslError(f'{root / "images" / "emma.jpg"}: needed for the latency frame')
  return cv2.resize(img, (1280, 720), interpolation=cv2.INTER_AREA)


def latency(det, frame, repeats):
  """Milliseconds of detect() and of the jitted network alone on one frame,
  timed in alternation (one of each per round) so load on a shared machine
  falls on both alike."""
  from dasl_jax.inference import faceboxes as F
  x, f = det.prepare(frame)
  t0 = time.perf_counter()
  jax.block_until_ready(F._forward(det.variables, x))
  first = time.perf_counter() - t0  # compilation for this size + one run
  fns = {'network_only': lambda: jax.block_until_ready(F._forward(det.variables, x)),
         'detect': lambda: det.detect(frame)}
  times = {k: [] for k in fns}
  for _ in range(2):  # warm-up
    for fn in fns.values():
      fn()
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  ms = lambda t: {'median_ms': round(float(np.median(t)) * 1e3, 2),
                  'best_ms': round(float(np.min(t)) * 1e3, 2),
                  'p90_ms': round(float(np.percentile(t, 90)) * 1e3, 2), 'repeats': len(t)}
  return {'frame': '1280x720 (images/emma.jpg resized)',
          'network_input': f'{x.shape[1]}x{x.shape[0]}', 'resize_factor': f,
          'first_call_with_compile_s': round(first, 2),
          **{k: ms(t) for k, t in times.items()},
          'faces_found': int(len(det.detect(frame)))}


def torch_latency(weights, frame, repeats):
  """The PyTorch original's forward on the same frame, if torch imports."""
  try:
    import torch  # noqa: F401
  except ImportError as e:
    return {'status': f'not timed: torch is not installed ({e})'}
  return {'status': 'not timed: torch imports, but this benchmark carries no PyTorch '
                    'FaceBoxes model (3DDFA_V2 FaceBoxes/models/faceboxes.py)'}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--json', default='', help='also write the results here as JSON')
  ap.add_argument('--repeats', type=int, default=20, help='timed calls (median reported)')
  ap.add_argument('--limit', type=int, default=0, help='only the first N reference images')
  ap.add_argument('--weights', default='', help='FaceBoxesProd.pth (default: in $DASL_ASSETS)')
  args = ap.parse_args(argv)

  def measure():
    from dasl_jax.inference import faceboxes as F
    from dasl_jax.assets import assets_dir
    from dasl_jax.errors import DaslError
    root = assets_dir()
    ref_path = root / 'pretrained' / 'faceboxes_reference.json'
    if not ref_path.exists():
      raise DaslError(f'{ref_path}: reference boxes not found (set DASL_ASSETS)')
    ref = json.loads(ref_path.read_text())['boxes']
    det = F.FaceBoxesDetector(args.weights or None)
    frame = frame_720p(root)
    res = {'weights': str(det.weights), 'reference': str(ref_path),
           'settings': dataclasses.asdict(det.settings), 'opencv': cv2.__version__,
           'latency_720p': latency(det, frame, args.repeats),
           'torch': torch_latency(det.weights, frame, args.repeats)}
    res['agreement'] = agreement(det, ref, root, args.limit)
    a = res['agreement']
    print(f"{a['matched']}/{a['reference_boxes']} reference boxes matched on {a['images']} "
          f"images; max corner {a['max_corner_px']:.4f} px, max score "
          f"{a['max_score_diff']:.5f}; extra {a['images_with_extra_faces']}, missing "
          f"{a['images_with_missing_faces']}")
    lat = res['latency_720p']
    print(f"720p detect {lat['detect']['median_ms']} ms (network "
          f"{lat['network_only']['median_ms']} ms); torch: {res['torch']['status']}")
    return res

  return common.finish(measure, args.json)


if __name__ == '__main__':
  main()
