"""``experiments.predict`` as a class: detector, model and what to write
for each image or video."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dasl_jax.geometry import camera
from dasl_jax.io import checkpoint as ckpt
from dasl_jax.inference import detect
from dasl_jax.io import meshes as mesh_io
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.geometry import params as P
from dasl_jax.inference import video as VT
from dasl_jax.viz import visualize
from dasl_jax.errors import BadInput, DaslError

from dasl_jax.errors import warn
from dasl_jax.face_model.bfm import face_models
from dasl_jax.inference.faces import DEFAULT_REFINE, landmark_depth, predict_image
from dasl_jax.inference.predictor import Predictor, dense_vertices, to_image_space
from dasl_jax.io.media import video_fps, video_frames


# ----------------------------------------------------------------------------
# The command's outputs.


DETECTORS = ('faceboxes', 'haar')


def make_detector(kind='faceboxes', faceboxes_weights=None, profile=True, backend='jax'):
  """The face detector by name.

  Args:
    kind: 'faceboxes' (3DDFA_V2's detector; weights ``faceboxes_weights`` or
      ``$DASL_ASSETS/pretrained/FaceBoxesProd.pth``) or 'haar' (OpenCV only;
      ``profile``: also the profile cascade).
    backend: FaceBoxes' runtime, 'jax' or 'onnxruntime' (Haar is OpenCV's either way).
  Raises:
    DaslError: unknown kind, or FaceBoxes weights missing or of another network.
  """
  if kind == 'faceboxes':
    from dasl_jax.inference import faceboxes
    return faceboxes.FaceBoxesDetector(faceboxes_weights, backend=backend)
  if kind == 'haar':
    return detect.HaarDetector(profile=profile)
  raise DaslError(f'--detector must be one of {", ".join(DETECTORS)}, got {kind!r}')


BACKENDS = ('jax', 'onnxruntime')


def _check_boxes_inside(boxes, shape, key):
  """A ``--boxes`` entry must overlap its image: a box wholly outside is a mistake
  in the file (another image's boxes, or swapped coordinates), not a face."""
  h, w = shape[:2]
  for k, b in enumerate(np.asarray(boxes, np.float64).reshape(-1, 5)):
    if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
      raise BadInput(f'--boxes entry {key!r}, box {k} {np.round(b[:4], 1).tolist()}: lies '
                     f'wholly outside the image ({w} x {h} px)')


class Runner:
  """``experiments.predict`` as a class: the model, the detector, and what to write
  for each image or video (JSON records, overlays, meshes, depth and normal maps).

  The detector (``detector``: 'faceboxes' or 'haar', see :func:`make_detector`) is
  built first, so missing weights fail before the model loads, and only when
  faces are not all given by a ``boxes`` file. ``backend`` runs FaceBoxes and the
  regressor on 'jax' or 'onnxruntime' (the regressor's graph built from
  ``checkpoint``, or read from an exported ``onnx`` file, float or int8, which
  then replaces the checkpoint). ``refine``: landmark re-crop passes of detected
  faces (``inference.faces.DEFAULT_REFINE``). ``tta`` 'flip': flip test-time
  averaging of the regressor (``Predictor``; jax only). ``dot_dtype`` 'bfloat16' runs a
  MobileNetV1's stem and 1x1 products on bf16 operands
  (:func:`dasl_jax.io.checkpoint.with_dot_dtype`); ``mesh_axes``: see
  :mod:`dasl_jax.io.meshes`.
  """

  def __init__(self, checkpoint, out, bfm=None, boxes=None, landmarks=None, min_face=24,
               bootstrap_iters=2, batch_size=32, depth=False, meshes=True, overlay=True,
               profile=True, alpha=visualize.DEFAULT_ALPHA, detector='faceboxes', faceboxes_weights=None,
               mesh_axes='3ddfa', dot_dtype='float32', backend='jax', onnx=None,
               refine=DEFAULT_REFINE, tta='none'):
    if mesh_axes not in mesh_io.MESH_AXES:
      raise DaslError(f'--mesh_axes must be one of {", ".join(mesh_io.MESH_AXES)}, '
                      f'got {mesh_axes!r}')
    self.mesh_axes = mesh_axes
    if bool(checkpoint) == bool(onnx):
      raise DaslError('give --checkpoint DIR or --onnx FILE.onnx (one of them)')
    if dot_dtype not in ckpt.DOT_DTYPES:  # before the (slow) restore
      raise DaslError(f'--dot_dtype: must be one of {", ".join(ckpt.DOT_DTYPES)}, '
                      f'got {dot_dtype!r}')
    if backend not in BACKENDS:  # before the restore, as dot_dtype
      raise DaslError(f'--backend must be one of {", ".join(BACKENDS)}, got {backend!r}')
    if onnx and backend != 'onnxruntime':
      raise DaslError(f'--onnx {onnx} runs on onnxruntime: drop --backend {backend}')
    if backend == 'onnxruntime' and dot_dtype != 'float32':
      raise DaslError('--dot_dtype bfloat16: only with --backend jax (the ONNX graph is float32)')
    if backend == 'onnxruntime' and tta != 'none':
      raise DaslError(f'--tta {tta}: only with --backend jax')
    if refine < 0:
      raise DaslError(f'--refine must be >= 0, got {refine}')
    self.refine = int(refine)
    self.backend, self.tta = backend, tta
    self.detector_name = detector if boxes is None else None
    self.detector = (make_detector(detector, faceboxes_weights, profile, backend)
                     if boxes is None else None)
    if onnx:
      from dasl_jax.inference.onnx import OnnxPredictor
      self.restored = None
      self.predictor = OnnxPredictor.from_file(onnx, batch_size=batch_size,
                                               bootstrap_iters=bootstrap_iters)
      self.models = face_models(None, bfm, kind=self.predictor.face_model)
    else:
      self.restored = ckpt.with_dot_dtype(ckpt.restore(checkpoint), dot_dtype)
      self.models = face_models(self.restored, bfm)
      if backend == 'onnxruntime':
        from dasl_jax.inference.onnx import OnnxPredictor
        self.predictor = OnnxPredictor(self.restored, self.models.landmarks,
                                       batch_size=batch_size, bootstrap_iters=bootstrap_iters)
      else:
        self.predictor = Predictor(self.restored, self.models.landmarks,
                                   batch_size=batch_size, bootstrap_iters=bootstrap_iters,
                                   tta=tta)
    self.boxes = detect.load_boxes(boxes) if boxes else None
    self.landmarks = detect.load_landmarks(landmarks) if landmarks else None
    self.out = Path(out)
    self.out.mkdir(parents=True, exist_ok=True)
    self.min_face = min_face
    self.depth, self.meshes, self.overlay, self.alpha = depth, meshes, overlay, alpha
    dense = self.models.dense
    self.dense = dense if dense is not None and dense.triangles is not None else None
    if self.dense is None:
      warn('no dense model with triangles: overlays show landmarks only and no '
           'meshes are written (pass --bfm DIR)')

  def describe(self):
    """What runs, for the console and every JSON record: ``{'regressor': ...,
    'detector': ...}`` (runtime and version of each)."""
    if self.detector_name is None:
      det = 'none (--boxes)'
    elif self.detector_name == 'haar':
      det = f'haar (OpenCV {cv2.__version__})'
    else:
      det = f'{self.detector_name} ({self.backend})'
    return {'regressor': self.predictor.describe(), 'detector': det, 'refine': self.refine,
            'tta': self.tta}

  def faces(self, image, name):
    key = Path(name).name
    boxes = self.boxes.get(key) if self.boxes is not None else None
    lms = self.landmarks.get(key) if self.landmarks is not None else None
    if self.boxes is not None and boxes is None:
      return [], [f'{name}: no boxes for this image in --boxes: no faces']
    if boxes is not None and not len(boxes):
      return [], []  # listed in --boxes with no box: no face
    if boxes is not None:
      _check_boxes_inside(boxes, image.shape, key)
    return predict_image(self.predictor, image, self.detector, boxes=boxes,
                         lms68=lms, min_face=self.min_face, name=name, refine=self.refine)

  def dense_crop_vertices(self, faces):
    """Per face (N, 3) dense vertices in crop pixels with depth (or [])."""
    if self.dense is None or not faces:
      return []
    return list(dense_vertices(self.dense, np.stack([f.params for f in faces]),
                               self.predictor.convention))

  def dense_image_vertices(self, faces, crop_verts=None):
    """Per face (N, 3) image-pixel vertices, one depth scale for all faces."""
    crop_verts = self.dense_crop_vertices(faces) if crop_verts is None else crop_verts
    return [visualize.face_vertices_image(v, f.roi_box) for v, f in zip(crop_verts, faces)]

  def picture(self, image, faces, verts):
    tri = self.dense.triangles if self.dense is not None else None
    return visualize.overlay(image, verts, tri, [f.lms68 for f in faces], alpha=self.alpha)

  def image(self, path, image):
    """Everything for one image; returns its JSON record."""
    faces, messages = self.faces(image, str(path))
    for m in messages:
      tqdm.write(m, file=sys.stderr)
    if not faces:
      msg = f'{path}: no face found'
      tqdm.write(msg, file=sys.stderr)
      messages.append(msg)
    stem = self.out / Path(path).stem
    crop_verts = self.dense_crop_vertices(faces)
    verts = self.dense_image_vertices(faces, crop_verts)
    files = {}
    if self.overlay:
      files['overlay'] = str(stem) + '_overlay.png'
      cv2.imwrite(files['overlay'], self.picture(image, faces, verts))
    if self.depth:
      tri = self.dense.triangles if self.dense is not None else None
      if tri is not None:
        files['depth'] = str(stem) + '_depth.png'
        files['normal'] = str(stem) + '_normal.png'
        cv2.imwrite(files['depth'], visualize.depth_map(image.shape, verts, tri)[0])
        cv2.imwrite(files['normal'], visualize.normal_map(image.shape, verts, tri))
    records = []
    for k, f in enumerate(faces):
      r = f.record()
      if self.meshes and crop_verts:
        v, tri = mesh_io.to_axes(to_image_space(crop_verts[k], f.roi_box),
                                 self.dense.triangles, image.shape[0], self.mesh_axes)
        obj, ply = mesh_io.write_mesh(f'{stem}_face{k}', v, tri, self.dense.colors)
        r['mesh_obj'], r['mesh_ply'] = str(obj), str(ply)
      records.append(r)
    rec = {'image': str(path), 'height': int(image.shape[0]), 'width': int(image.shape[1]),
           'faces': records, 'messages': messages, 'files': files,
           'mesh_axes': self.mesh_axes if self.meshes else None,
           'model': self.models.note, 'convention': self.predictor.convention,
           **self.describe()}
    (Path(str(stem) + '.json')).write_text(json.dumps(rec, indent=1) + '\n')
    return rec

  def video(self, path, every=1, track=True, smooth=VT.DEFAULT_SMOOTH,
            detect_every=VT.DEFAULT_DETECT_EVERY):
    """Every ``every``-th frame of a video: ``STEM.jsonl`` (one JSON object per
    frame, written as the frames come), ``STEM.json`` (all frames) and
    ``STEM_overlay.mp4``.

    ``track``: follow faces by alignment and re-detect only when lost
    (:class:`dasl_jax.inference.video.Tracker`), and run the detector every
    ``detect_every`` processed frames while tracking (0: only when lost) so
    that faces entering later start tracks of their own; ``smooth``: centred window of
    frames over which each track's parameters are averaged (0/1: off), the
    landmarks and meshes recomputed from them. A frame that fails to decode
    ends the video with the frames before it written and an ``error`` in the
    record (printed as one line).
    """
    window = VT.smooth_window(smooth)
    stem = self.out / Path(path).stem
    frames = []
    cap = cv2.VideoCapture(str(path))
    opened, n_total = cap.isOpened(), int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    cap.release()
    if not opened:
      next(video_frames(path))  # raises its one-line DaslError; nothing is written

    def align(frame, lms, name):
      faces, messages = predict_image(self.predictor, frame, lms68=lms,
                                      min_face=self.min_face, name=name)
      # A 4-channel model's FLM came from the frame before's prediction.
      return [dataclasses.replace(f, kind='track', flm='previous_frame' if f.flm == 'detector'
                                  else f.flm) for f in faces], messages

    tracker = VT.Tracker(self.faces, align, enabled=track, detect_every=detect_every)
    smoother = VT.StreamSmoother(window, self.predictor.convention)
    jsonl = open(str(stem) + '.jsonl', 'w')
    state = {'writer': None}

    def emit(item):
      faces = [self._smoothed_face(f['face'], f['params']) if window > 1 else f['face']
               for f in item['faces']]
      recs = []
      for f, tid in zip(faces, (g['track'] for g in item['faces'])):
        r = f.record()
        r['track'] = tid
        recs.append(r)
      rec = {'frame': item['frame'], 'mode': item['mode'], 'faces': recs,
             'messages': item['messages']}
      if not frames:
        rec.update(self.describe())  # what ran, once per video
      jsonl.write(json.dumps(rec) + '\n')
      jsonl.flush()
      frames.append(rec)
      if self.overlay:
        frame = item['image']
        if state['writer'] is None:
          h, w = frame.shape[:2]
          fps = video_fps(path) / every
          state['writer'] = cv2.VideoWriter(str(stem) + '_overlay.mp4',
                                            cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
          if not state['writer'].isOpened():
            warn(f'{path}: cannot write an mp4 here; writing overlay PNGs')
            state['writer'] = False
        pic = self.picture(frame, faces, self.dense_image_vertices(faces))
        if state['writer']:
          state['writer'].write(pic)
        else:
          cv2.imwrite(f'{stem}_frame{item["frame"]:06d}_overlay.png', pic)

    bar = tqdm(total=n_total, desc=Path(path).name, unit='frame')
    last, error = 0, None
    try:
      for i, frame in video_frames(path, every):
        faces, ids, messages, mode = tracker.step(frame, f'{path}#frame{i}')
        item = {'frame': i, 'image': frame if self.overlay else None, 'mode': mode,
                'messages': messages,
                'faces': [{'track': t, 'params': f.params, 'roi_box': f.roi_box, 'face': f}
                          for f, t in zip(faces, ids)]}
        for ready in smoother.push(item):
          emit(ready)
        bar.update(i + 1 - last)
        last = i + 1
    except BadInput:
      raise
    except DaslError as e:
      error = str(e)
      if last == 0:  # not one frame: nothing to keep
        jsonl.close()
        Path(str(stem) + '.jsonl').unlink()
        bar.close()
        raise
      tqdm.write(f'error: {error}', file=sys.stderr)
    finally:
      for ready in smoother.flush():
        emit(ready)
      jsonl.close()
      bar.close()
      if state['writer']:
        state['writer'].release()
    rec = {'video': str(path), 'every': every, 'track': bool(track), 'smooth': window,
           'detect_every': int(detect_every) if track else None,
           'frames': frames, 'model': self.models.note,
           'convention': self.predictor.convention, **self.describe()}
    if error:
      rec['error'] = error
    (Path(str(stem) + '.json')).write_text(json.dumps(rec, indent=1) + '\n')
    return rec

  def _smoothed_face(self, face, params):
    """A :class:`Face` with smoothed ``params`` (62,) (in its own crop): landmarks
    and pose recomputed."""
    if not hasattr(self, '_lms_pose'):
      lm, conv = self.predictor.lm_model, self.predictor.convention
      self._lms_pose = jax.jit(lambda p: (mm.landmarks2d(lm, p, conv),
                                          camera.pose_angles(P.split(p)[0])))
    p = np.asarray(params, np.float32)
    crop, pose = (np.asarray(a) for a in self._lms_pose(jnp.asarray(p)))
    img = np.asarray(camera.crop_to_image(crop, face.roi_box))
    depth = landmark_depth(self.predictor.lm_model, p[None], np.asarray(face.roi_box)[None],
                           self.predictor.convention)[0]
    return dataclasses.replace(face, params=p, pose=pose, lms68=img, lms68_crop=crop,
                               depth68=depth)
