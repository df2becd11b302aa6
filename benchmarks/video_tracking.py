r"""Video tracking and smoothing on videos with known motion: landmark error, jitter, speed.

  python -m benchmarks.video_tracking --checkpoint DIR [--bfm DIR] [--frames 60]
      [--images image00043,...] [--smooth 3] [--also_windows 5,9] [--json experiments/results/video_tracking.json]

Each AFLW2000-3D photo (``$DASL_ASSETS/aflw2000-3d/AFLW2000``, with its 68
ground-truth points ``pt3d_68``) is moved by known smooth affine transforms
(``video_tracking.smooth_motion``: translation along a Lissajous curve, rotation
+-12 degrees, scale +-12%) into 480x360 frames with independent Gaussian pixel
noise (sigma 3 grey levels) and written as an MJPG AVI; the ground truth of frame
t is the photo's points moved by the same transform. ``inference.Runner.video``
(FaceBoxes detector, no overlay) then runs with tracking on/off and smoothing
on/off. Reported per arm: NME (% of the ground-truth box size sqrt(w h), mean
over frames), jitter (mean over frames of |d pred - d gt| per point, % of the
box size, d = change from the frame before), frames without the face, detector
calls, and frames per second of ``Runner.video`` (decode, detect/track, regress,
smooth, JSON; after a warm-up run that compiles everything). ``--also_windows``
adds tracked arms with other smoothing windows (the bias of a long window on a
curving motion against its jitter gain).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks import common

DEFAULT_IMAGES = 'image00043,image00053,image00104,image00302'
SIZE = (480, 360)


def make_video(root, name, n, path, seed):
  """Write the moved video of one AFLW2000 photo; returns the (n, 68, 2) ground truth."""
  import scipy.io as sio
  from dasl_jax.inference import video as V
  img = cv2.imread(str(root / f'{name}.jpg'))
  gt = sio.loadmat(str(root / f'{name}.mat'))['pt3d_68'][:2].T
  aff = V.smooth_motion(n, SIZE, gt.mean(0), seed=seed)
  w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 25, SIZE)
  for f in V.moved_frames(img, aff, SIZE, noise=3.0, seed=seed):
    w.write(f)
  w.release()
  return np.stack([V.apply_affine(gt, a) for a in aff])


def predicted(rec, gt):
  """(n, 68, 2) landmarks of the face nearest the ground truth per frame (NaN: none)."""
  out = np.full(gt.shape, np.nan)
  for t, fr in enumerate(rec['frames']):
    if not fr['faces']:
      continue
    lms = [np.asarray(f['landmarks68']) for f in fr['faces']]
    d = [np.linalg.norm(l.mean(0) - gt[t].mean(0)) for l in lms]
    out[t] = lms[int(np.argmin(d))]
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--checkpoint', required=True)
  ap.add_argument('--bfm', default=None)
  ap.add_argument('--frames', type=int, default=60)
  ap.add_argument('--images', default=DEFAULT_IMAGES)
  ap.add_argument('--smooth', type=int, default=3)
  ap.add_argument('--also_windows', default='5,9',
                  help='extra smoothing windows measured with tracking (comma list, "" none)')
  ap.add_argument('--json', default='experiments/results/video_tracking.json')
  args = ap.parse_args()
  from dasl_jax import inference
  from dasl_jax.inference import video as V
  from dasl_jax.evaluation import metrics
  from dasl_jax.assets import asset
  root = asset('aflw2000-3d', 'AFLW2000')
  tmp = Path(tempfile.mkdtemp(prefix='video_tracking_'))
  runner = inference.Runner(args.checkpoint, tmp / 'out', bfm=args.bfm, overlay=False,
                            meshes=False)
  names = args.images.split(',')
  videos = []
  for k, name in enumerate(names):
    path = tmp / f'{name}.avi'
    videos.append((name, path, make_video(root, name, args.frames, path, seed=k)))
  # Warm-up: compiles the detector and the regressor (both paths).
  warm = tmp / 'warm.avi'
  make_video(root, names[0], 3, warm, seed=99)
  runner.video(warm, track=False, smooth=1)
  runner.video(warm, track=True, smooth=args.smooth)
  arms = [('detect every frame', False, 1), ('detect every frame + smooth', False, args.smooth),
          ('track', True, 1), ('track + smooth', True, args.smooth)]
  arms += [(f'track + smooth {w}', True, int(w)) for w in args.also_windows.split(',') if w]
  results = []
  for label, track, smooth in arms:
    per, all_err, jit, missing, detects, frames, secs = [], [], [], 0, 0, 0, 0.0
    for name, path, gt in videos:
      t0 = time.perf_counter()
      rec = runner.video(path, track=track, smooth=smooth)
      secs += time.perf_counter() - t0
      pred = predicted(rec, gt)
      ok = np.isfinite(pred).all((1, 2))
      missing += int((~ok).sum())
      frames += len(gt)
      detects += sum(not f['mode'].startswith('track') for f in rec['frames'])
      e = 100 * metrics.nme(pred[ok], gt[ok])  # percent
      j = 100 * metrics.jitter(pred[ok], gt[ok]) if ok.all() else float('nan')
      all_err.append(e)
      jit.append(j)
      per.append({'image': name, 'nme': round(float(e.mean()), 3),
                  'nme_max': round(float(e.max()), 3), 'jitter': round(j, 4),
                  'frames_without_face': int((~ok).sum()),
                  'modes': sorted(set(f['mode'] for f in rec['frames']))})
    r = {'arm': label, 'track': track, 'smooth': smooth,
         'nme': round(float(np.concatenate(all_err).mean()), 3),
         'jitter': round(float(np.nanmean(jit)), 4), 'frames': frames,
         'frames_without_face': missing, 'detector_frames': detects,
         'fps': round(frames / secs, 2), 'per_video': per}
    results.append(r)
    print(f'{label:30s} NME {r["nme"]:.3f}%  jitter {r["jitter"]:.4f}%  '
          f'{r["fps"]:.1f} fps  detector on {detects}/{frames} frames, '
          f'{missing} without face')
  out = dict(common.header(), benchmark='video_tracking',
             setup={'frames_per_video': args.frames, 'size': SIZE, 'noise_sigma': 3.0,
                    'motion': 'video_tracking.smooth_motion defaults (+-12% shift, '
                              '+-12 deg, +-12% scale)',
                    'videos': names, 'checkpoint': args.checkpoint,
                    'model': runner.models.note},
             results=results)
  Path(args.json).parent.mkdir(parents=True, exist_ok=True)
  Path(args.json).write_text(json.dumps(out, indent=1) + '\n')
  print(f'-> {args.json}')


if __name__ == '__main__':
  main()
