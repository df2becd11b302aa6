r"""Predict 3D faces on photos or videos: JSON records, overlays, meshes.

  python -m experiments.predict --checkpoint WORKDIR --input PATH [PATH ...] [--out DIR]
      [--detector faceboxes|haar] [--faceboxes_weights FILE]
      [--boxes FILE] [--landmarks FILE] [--bfm DIR] [--depth] [--every N]
      [--backend jax|onnxruntime] [--onnx MODEL.onnx] [--refine 1] [--detect_every 10]
      [--tta none|flip]

PATH is an image, a folder of images/videos, or a video; several may follow
``--input`` (a shell glob such as ``images/*.jpg``), be given after the options,
or repeat ``--input``. Anything that is not an existing file or folder is refused
before the model loads. Per image ``NAME``:
``NAME.json`` (one record per face: box, roi_box, score, 62 parameters,
yaw/pitch/roll, 68 landmarks in image pixels), ``NAME_overlay.png`` (mesh and
landmarks over the photo), ``NAME_face<k>.obj`` / ``.ply`` (mesh in image
pixels, per-vertex colour; ``--mesh_axes 3ddfa``, the default, flips y up as
3DDFA_V2 does, so viewers show the face upright; ``image`` keeps y down) and with ``--depth`` ``NAME_depth.png`` /
``NAME_normal.png``. A video gives ``NAME.jsonl`` (one JSON object per frame,
written as it goes), ``NAME.json`` with a record per frame and
``NAME_overlay.mp4``; faces are tracked (``--track``) and their parameters
smoothed over ``--smooth`` frames (``dasl_jax.inference.video``).

Faces come from ``--boxes`` (JSON or CSV x1,y1,x2,y2[,score] per image; the
layouts are in the flag's help and ``dasl_jax.inference.detect.load_boxes``), else
``--landmarks`` (68 points per face), else ``--detector``: FaceBoxes (default;
3DDFA_V2's detector, weights ``$DASL_ASSETS/pretrained/FaceBoxesProd.pth`` or
``--faceboxes_weights``) or OpenCV's Haar cascades (``haar``, no weights). 4-channel
models take their FLM from ``--landmarks`` or bootstrap it from the mean face
(``--bootstrap_iters``).

Each detected face is cut again ``--refine`` times (default 1; 0: off) around its
predicted 68 landmarks by 3DDFA's landmark crop, the crop the AFLW2000-3D benchmark
and the video tracker use (``dasl_jax.inference.faces``).

``--backend onnxruntime`` runs FaceBoxes and the regressor in onnxruntime, the
regressor's graph built from the checkpoint (``dasl_jax.inference.onnx``; the same
landmarks as the JAX backend within the tolerance ``tests/inference/test_backends.py``
states); ``--onnx FILE`` reads an exported regressor instead of ``--checkpoint``
(``experiments.export --format onnx``, float or ``--quantize int8``). The console's
``backend:`` line and every JSON record say what ran.

``--calibrate`` only re-measures the Haar box calibration on the AFLW2000-3D
originals in ``$DASL_ASSETS`` and prints it (no checkpoint needed).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags, logging

from dasl_jax import cli

FLAGS = flags.FLAGS
cli.define_flags('checkpoint', 'bfm', 'bootstrap_iters', 'detector', 'faceboxes_weights',
                 'dot_dtype', checkpoint='model work directory (experiments.train or '
                 'experiments.convert_checkpoint output); or give --onnx',
                 bfm='BFM folder (keypoints68/, Model_PAF.pkl, optional w_shp_sim.npy), or '
                 '3DDFA_V2\'s bfm_noneck_v3.pkl (the file, or its configs/ folder with '
                 'tri.pkl); default: the one the checkpoint was trained with',
                 detector='face detector when no --boxes: FaceBoxes (needs '
                 'FaceBoxesProd.pth) or OpenCV Haar cascades')
flags.DEFINE_string('onnx', None, 'instead of --checkpoint: a regressor exported by '
                    'experiments.export --format onnx (float or int8), run on onnxruntime')
flags.DEFINE_integer('refine', 1, 'landmark re-crop passes of each detected face: cut again '
                     'around its predicted 68 landmarks (3DDFA\'s landmark crop, the '
                     'benchmark\'s) and predict again; 0: off')
flags.DEFINE_multi_string('input', None, 'an image, a video, or a folder of them; more '
                          'paths may follow (e.g. a shell glob) or the flag may repeat')
flags.DEFINE_string('out', 'predictions', 'output folder (created)')
flags.DEFINE_string('boxes', None, 'face boxes in image pixels, images matched by file name: '
                    'JSON {"img.jpg": [[x1, y1, x2, y2, score?], ...]} ([] = no face), the '
                    'same map under a "boxes" key (faceboxes_reference.json), '
                    '[{"image": "img.jpg", "box": [x1, y1, x2, y2], "score": s?}, ...], or '
                    'CSV rows img.jpg,x1,y1,x2,y2[,score]')
flags.DEFINE_string('landmarks', None, '68-point detector landmarks in image pixels: '
                    'lines name,x1,y1,...,x68,y68 or JSON {name: [[x, y] x 68]}')
flags.DEFINE_integer('every', 1, 'videos: use every N-th frame')
flags.DEFINE_bool('track', True, 'videos: follow each face from its last landmarks (3DDFA '
                  'landmark crop) and run the detector only when a face is lost; '
                  '--notrack detects on every frame')
flags.DEFINE_integer('detect_every', 10, 'videos with --track: also run the detector every '
                     'N frames, so faces that enter later start tracks of their own (0: only '
                     'when a track is lost)')
flags.DEFINE_integer('smooth', 3, 'videos: average each face\'s 62 parameters over a centred '
                     'window of this many frames (odd; 0 or 1: off); landmarks and meshes '
                     'are recomputed from them')
flags.DEFINE_integer('min_face', 24, 'skip faces whose box is smaller than this (pixels)')
flags.DEFINE_integer('batch_size', 32, 'largest batch of faces per forward pass')
flags.DEFINE_bool('depth', False, 'also write depth and normal maps')
flags.DEFINE_bool('meshes', True, 'write .obj and .ply meshes (images only)')
flags.DEFINE_enum('mesh_axes', '3ddfa', ['3ddfa', 'image'], '.obj/.ply axes: 3ddfa = x right, '
                  'y up (image height - y), z toward the viewer, as 3DDFA_V2 writes them '
                  '(upright in MeshLab); image = pixel axes, y down. Normals face +z either way')
flags.DEFINE_bool('overlay', True, 'write overlay pictures')
flags.DEFINE_bool('profile', True, 'Haar detector: also run the profile cascade')
flags.DEFINE_float('alpha', 0.75, 'mesh opacity in overlays (0..1)')
flags.DEFINE_enum('backend', 'jax', ['jax', 'onnxruntime'], 'runtime of FaceBoxes and the '
                  'regressor: jax (jitted) or onnxruntime (dasl_jax.inference.onnx: the same '
                  'functions as ONNX graphs built from the weights; float32). --onnx implies '
                  'onnxruntime')
flags.DEFINE_enum('tta', 'none', ['none', 'flip'], 'test-time averaging: flip = each face '
                  'crop and its mirror image, the mirrored parameters mapped back and averaged '
                  '(twice the regression cost; --backend jax)')
flags.DEFINE_bool('calibrate', False, 'print the Haar box calibration measured on '
                  'AFLW2000-3D originals and exit')


def calibrate():
  import numpy as np
  from dasl_jax.inference import detect
  from dasl_jax.assets import asset
  root = asset('aflw2000-3d')
  names = (root / 'AFLW2000-3D_crop.list').read_text().split()
  roi = np.load(root / 'test.configs' / 'AFLW2000-3D_crop.roi_box.npy')
  idx = [i for i, n in enumerate(names) if (root / 'originals' / n).exists()]
  if not idx:
    from dasl_jax.errors import DaslError
    raise DaslError(f'{root / "originals"}: no original images to calibrate on')
  res = detect.calibrate([root / 'originals' / names[i] for i in idx], roi[idx])
  print(json.dumps(res, indent=1))


def run(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore step at INFO
  from dasl_jax.errors import BadInput, DaslError
  from dasl_jax.io.input_files import scan_inputs
  if FLAGS.calibrate:
    calibrate()
    return 0
  paths = list(FLAGS.input or []) + list(argv[1:])  # argv[1:]: the rest of a shell glob
  if not FLAGS.checkpoint and not FLAGS.onnx:
    raise DaslError('--checkpoint is required (or --onnx MODEL.onnx)')
  if FLAGS.checkpoint and FLAGS.onnx:
    raise DaslError('give --checkpoint DIR or --onnx FILE.onnx, not both')
  if not paths:
    raise DaslError('--input is required')
  if FLAGS.every < 1:
    raise DaslError(f'--every must be >= 1, got {FLAGS.every}')
  for name in ('refine', 'detect_every'):
    if FLAGS[name].value < 0:
      raise DaslError(f'--{name} must be >= 0, got {FLAGS[name].value}')
  backend = 'onnxruntime' if FLAGS.onnx and not FLAGS['backend'].present else FLAGS.backend
  from dasl_jax.inference.video import smooth_window
  smooth_window(FLAGS.smooth)  # a bad value fails before the model loads
  files, skipped = scan_inputs(paths)  # before JAX loads: a mistyped argument fails at once
  from dasl_jax import inference
  single = len(paths) == 1 and Path(paths[0]).is_file()
  if single and not inference.is_video(files[0]):
    inference.load_image(files[0])  # an unreadable file fails before the model loads
  elif single:
    next(inference.video_frames(files[0]))  # so does a video that cannot be opened
  runner = inference.Runner(FLAGS.checkpoint, FLAGS.out, bfm=FLAGS.bfm, boxes=FLAGS.boxes,
                  landmarks=FLAGS.landmarks, min_face=FLAGS.min_face,
                  bootstrap_iters=FLAGS.bootstrap_iters, batch_size=FLAGS.batch_size,
                  depth=FLAGS.depth, meshes=FLAGS.meshes, overlay=FLAGS.overlay,
                  profile=FLAGS.profile, alpha=FLAGS.alpha, detector=FLAGS.detector,
                  faceboxes_weights=FLAGS.faceboxes_weights, mesh_axes=FLAGS.mesh_axes,
                  dot_dtype=FLAGS.dot_dtype, backend=backend, onnx=FLAGS.onnx,
                  refine=FLAGS.refine, tta=FLAGS.tta)
  what = runner.describe()
  print(f'face model: {runner.models.note or runner.models.kind}', file=sys.stderr)
  print(f'backend: regressor {what["regressor"]}, detector {what["detector"]}, '
        f'--refine {what["refine"]}', file=sys.stderr)
  n_faces, cut_short = 0, 0
  from tqdm import tqdm
  t0 = time.time()
  for path in tqdm(files, desc='images', unit='file', disable=len(files) < 2):
    try:
      if inference.is_video(path):
        rec = runner.video(path, FLAGS.every, track=FLAGS.track, smooth=FLAGS.smooth,
                           detect_every=FLAGS.detect_every)
        n_faces += sum(len(f['faces']) for f in rec['frames'])
        cut_short += 'error' in rec  # printed; the frames before it are written
        continue
      image = inference.load_image(path)
    except BadInput:
      raise
    except DaslError as e:
      if single:
        raise
      skipped.append((path, str(e).replace(f'{path}: ', '', 1)))
      stem = Path(FLAGS.out) / path.stem
      Path(str(stem) + '.json').write_text(json.dumps(
          {'image': str(path), 'faces': [], 'messages': [str(e)], 'error': str(e)},
          indent=1) + '\n')
      continue
    rec = runner.image(path, image)
    n_faces += len(rec['faces'])
  for p, why in skipped:
    print(f'warning: skipped {p}: {why}', file=sys.stderr)
  read = len(files) - sum(1 for p, _ in skipped if p in set(files))
  print(f'{read} input(s) read, {n_faces} face(s), {len(skipped)} skipped'
        f'{f", {cut_short} video(s) cut short" if cut_short else ""}, '
        f'{time.time() - t0:.1f} s -> {FLAGS.out}')
  return 0


main = cli.command(run)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
