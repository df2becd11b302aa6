"""Prediction on real photos: images in, per-face parameters, pose and landmarks out.

Pieces, each usable alone:

* :func:`load_image` reads any photo as BGR uint8 (grey, RGBA, 16-bit, EXIF
  orientation) or raises a one-line :class:`DaslError`;
* :func:`face_models` picks the morphable model(s) a checkpoint was trained
  with: a 68-landmark model for landmarks and a dense one with triangles for
  meshes and overlays;
* :class:`Predictor` runs the jitted regressor on batches of 120x120 crops,
  with the FLM channel for 4-channel models from detector landmarks or
  self-bootstrapped from the mean face;
* :func:`predict_image` ties detection, cropping and prediction together for
  one image and returns :class:`Face` records in image coordinates.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dasl_jax import camera
from dasl_jax import checkpoint as ckpt
from dasl_jax import crop as C
from dasl_jax import detect
from dasl_jax import landmarks as L
from dasl_jax import mesh_io
from dasl_jax import morphable_model as mm
from dasl_jax import params as P
from dasl_jax import predict_batch as core
from dasl_jax import video_tracking as VT
from dasl_jax import visualize
from dasl_jax.assets import asset
from dasl_jax.errors import DaslError

from dasl_jax.input_files import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_inputs  # noqa: F401


def warn(msg):
  print(f'warning: {msg}', file=sys.stderr)


# ----------------------------------------------------------------------------
# Images.


def load_image(path) -> np.ndarray:
  """Read a photo as (H, W, 3) uint8 BGR.

  Grey images are expanded to three channels; RGBA images are composited over
  white (a transparent background would otherwise come out black, or as
  whatever colour the hidden pixels hold); 16-bit images are scaled to 8 bits;
  the EXIF orientation tag is applied (OpenCV 4.x's ``IMREAD_COLOR`` does this
  for JPEGs; ``tests/test_inference.py`` checks it on a rotated JPEG).

  Raises:
    DaslError: missing, empty or undecodable file.
  """
  path = Path(path)
  if not path.exists():
    raise DaslError(f'{path}: file not found')
  if path.is_dir():
    raise DaslError(f'{path}: is a folder, not an image')
  buf = np.fromfile(str(path), np.uint8)  # also works for non-ASCII paths
  if buf.size == 0:
    raise DaslError(f'{path}: empty file')
  raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
  if raw is None or raw.size == 0:
    raise DaslError(f'{path}: not a readable image (OpenCV cannot decode it)')
  if raw.ndim == 3 and raw.shape[2] == 4:
    rgb = raw[..., :3].astype(np.float32)
    alpha = raw[..., 3:].astype(np.float32)
    top = 65535.0 if raw.dtype == np.uint16 else 255.0
    img = rgb * (alpha / top) + top * (1 - alpha / top)
    img = img * (255.0 / top)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
  img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # grey -> BGR, 16 -> 8 bit, EXIF applied
  if img is None:
    raise DaslError(f'{path}: not a readable image (OpenCV cannot decode it)')
  return img


def is_video(path) -> bool:
  return Path(path).suffix.lower() in VIDEO_SUFFIXES


def video_frames(path, every=1):
  """Yield (frame index, (H, W, 3) uint8 BGR) of a video, every ``every``-th frame.

  Raises (after yielding every frame that decoded):
    DaslError: the video cannot be opened, has no readable frame, or stops
      before the frame count its container declares (truncated or corrupt).
  """
  cap = cv2.VideoCapture(str(path))
  if not cap.isOpened():
    raise DaslError(f'{path}: cannot open the video (missing, truncated or corrupt file, '
                    'or no OpenCV decoder for it)')
  try:
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    i = 0
    while True:
      ok, frame = cap.read()
      if not ok:
        break
      if i % every == 0:
        yield i, frame
      i += 1
    if i == 0:
      raise DaslError(f'{path}: the video has no readable frames')
    if i < declared:
      raise DaslError(f'{path}: frame {i} of the {declared} the file declares cannot be '
                      f'decoded (truncated or corrupt file?); the {i} frames before it are kept')
  finally:
    cap.release()


def video_fps(path) -> float:
  cap = cv2.VideoCapture(str(path))
  fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
  cap.release()
  return float(fps) if fps and fps > 0 else 25.0


# ----------------------------------------------------------------------------
# Morphable models of a checkpoint.


@dataclasses.dataclass
class FaceModels:
  """``landmarks``: a 68-row model for the landmarks (exact basis rows);
  ``dense``: a model with triangles and colours for meshes, or None;
  ``kind``: 'bfm' or 'synthetic'; ``note``: how they were chosen."""
  landmarks: mm.MorphableModel
  dense: Optional[mm.MorphableModel]
  kind: str
  note: str = ''


def checkpoint_face_model(flags) -> str:
  """'synthetic' or 'bfm': which model a training run's flags say it learnt.

  Converted checkpoints (no flags) are 3DDFA / 3DDFA_V2 models, trained on the BFM.
  """
  if not flags:
    return 'bfm'
  data = flags.get('data', {}) if isinstance(flags.get('data'), dict) else {}
  src = data.get('source_3d', flags.get('data.source_3d', flags.get('source_3d', '')))
  return 'synthetic' if src == 'synthetic' else 'bfm'


def _flag(flags, name):
  if not flags:
    return ''
  data = flags.get('data', {}) if isinstance(flags.get('data'), dict) else {}
  return data.get(name, flags.get(f'data.{name}', '')) or ''


def bfm_off_surface(paf_mean, bfm_mean, tol=0.01):
  """Grid vertices of Model_PAF farther than ``tol`` x face width from the BFM mesh.

  Args:
    paf_mean: (N, 3) Model_PAF mean; bfm_mean: (M, 3) BFM mean vertices.
  Returns:
    (N,) bool.
  """
  from scipy.spatial import cKDTree
  d, _ = cKDTree(bfm_mean).query(paf_mean)
  width = np.ptp(bfm_mean[:, 0])
  return d > tol * width


def _nearest_colors(points, ref_points, ref_colors):
  from scipy.spatial import cKDTree
  _, idx = cKDTree(ref_points).query(points)
  return ref_colors[idx]


def load_paf_dense(bfm_dir, landmark_model=None, shape_sim=None) -> mm.MorphableModel:
  """The 4,096-vertex ``Model_PAF.pkl`` grid as a mesh: triangles over the grid
  without the points that lie off the face surface, colours from the nearest
  full-BFM vertex's mean texture (``Model_Shape_Sim.mat``, when present). The
  one assembly of this mesh: overlays and the synthetic-BFM renderer use it.

  Args:
    landmark_model: the keypoints68 model (picks the grid's 68 landmark rows).
    shape_sim: ``mm.load_shape_sim_mat`` output if already loaded.
  """
  d = Path(bfm_dir)
  raw = mm._load_pickle(d / 'Model_PAF.pkl')
  paf_mean = np.asarray(raw['mu_filter'], np.float32).reshape(-1, 3)
  # The BFM mean face is u_shp + u_exp (Model_Shape_Sim's mu_shape lacks the
  # expression mean, and would flag half the grid as off the surface).
  bfm_mean = None
  if (d / 'u_shp.npy').exists() and (d / 'u_exp.npy').exists():
    bfm_mean = (mm._load_npy(d / 'u_shp.npy', 'mean shape') +
                mm._load_npy(d / 'u_exp.npy', 'mean expression')).reshape(-1, 3)
  off = bfm_off_surface(paf_mean, bfm_mean) if bfm_mean is not None else None
  dense = mm.load_model_paf(d / 'Model_PAF.pkl', reference=landmark_model, off_surface=off)
  if shape_sim is None and (d / 'Model_Shape_Sim.mat').exists():
    shape_sim = mm.load_shape_sim_mat(d / 'Model_Shape_Sim.mat')
  if (shape_sim is not None and 'tex' in shape_sim and bfm_mean is not None
      and len(bfm_mean) == len(shape_sim['tex'])):
    dense = dense.replace(colors=_nearest_colors(paf_mean, bfm_mean, shape_sim['tex']))
  return dense


@functools.lru_cache(maxsize=4)
def load_bfm_models(bfm_dir: str) -> FaceModels:
  """BFM models from a folder laid out like ``assets/bfm``.

  Landmarks: ``keypoints68/`` (the exact 68 basis rows). Dense: the full BFM
  when ``w_shp_sim.npy`` is there (triangles and colours from
  ``Model_Shape_Sim.mat``), else the 4,096-vertex ``Model_PAF.pkl`` grid with
  its off-surface grid points dropped and colours from the nearest BFM vertex.
  """
  d = Path(bfm_dir)
  if not d.is_dir():
    raise DaslError(f'--bfm {d}: folder not found')
  if (d / 'keypoints68' / 'u_base.txt').exists():
    lms = mm.load_keypoints68(d / 'keypoints68')
  elif (d / 'u_base.txt').exists():
    lms = mm.load_keypoints68(d)
  else:
    lms = None
  sim = d / 'Model_Shape_Sim.mat'
  simd = mm.load_shape_sim_mat(sim) if sim.exists() else None
  dense, note = None, ''
  if (d / 'w_shp_sim.npy').exists():
    dense = mm.load_3ddfa_configs(d)
    if simd is not None and len(simd['mean']) == dense.n_vertices:
      dense = dense.replace(triangles=simd['triangles'], colors=simd.get('tex'))
      note = f'dense: full BFM {d} ({dense.n_vertices} vertices)'
    else:
      note = f'dense: full BFM {d} without triangles (no matching Model_Shape_Sim.mat)'
  elif (d / 'Model_PAF.pkl').exists():
    dense = load_paf_dense(d, lms, simd)
    note = f'dense: Model_PAF.pkl ({dense.n_vertices} vertices, {len(dense.triangles)} triangles)'
  if lms is None:
    if dense is None:
      raise DaslError(f'--bfm {d}: no morphable model here (need keypoints68/, '
                      'w_shp_sim.npy or Model_PAF.pkl)')
    lms = dense.landmark_model()
  return FaceModels(lms, dense, 'bfm', note)


def face_models(restored, bfm_dir=None) -> FaceModels:
  """The models to read a checkpoint's parameters with.

  ``--bfm DIR`` wins. Otherwise a synthetic-data run uses the built-in
  synthetic model, and a BFM-trained checkpoint uses ``<assets>/bfm`` (or its
  run's ``data.bfm_dir``) when present; else it warns and falls back to the
  synthetic model, whose coefficients mean something else.
  """
  kind = checkpoint_face_model(restored.flags)
  if bfm_dir:
    m = load_bfm_models(str(Path(bfm_dir).expanduser().resolve()))
    if kind == 'synthetic':
      warn(f'--bfm {bfm_dir}: this checkpoint was trained on the synthetic face model; '
           'its shape coefficients mean something else in the BFM')
    return m
  if kind == 'bfm':
    cand = _flag(restored.flags, 'bfm_dir') or str(asset('bfm'))
    if Path(cand).is_dir():
      return load_bfm_models(str(Path(cand).resolve()))
    warn('this checkpoint was trained on the BFM but no BFM folder was found '
         f'(looked at {cand}); pass --bfm DIR. Using the synthetic face model: '
         'landmarks and meshes will be wrong')
  from dasl_jax.data.synthetic_model import build_synthetic_model
  syn = build_synthetic_model()
  return FaceModels(syn.landmark_model(), syn, 'synthetic', 'built-in synthetic face model')


# ----------------------------------------------------------------------------
# The regressor on crops (the prediction core, ``predict_batch``, with
# interactive batching).


class Predictor:
  """A restored regressor with its whitening, landmark model and convention.

  Args:
    restored: ``dasl_jax.checkpoint.restore(...)`` output.
    landmark_model: 68-row morphable model for the landmarks.
    batch_size: the largest batch one call runs (bigger inputs are split;
      smaller ones are padded to a power of two).
    bootstrap_iters: forward passes of the self-bootstrapped FLM (4-channel
      models without detector landmarks): the first from the mean face's
      landmarks, each next one from the previous prediction's.
  """

  def __init__(self, restored, landmark_model, batch_size=32, bootstrap_iters=2):
    self.module = restored.module
    self.variables = jax.tree_util.tree_map(jnp.asarray, restored.variables)
    self.config = restored.model_config
    self.stats = restored.param_stats
    self.convention = self.config.convention
    self.lm_model = landmark_model.landmark_model()
    self.batch_size = batch_size
    if bootstrap_iters < 1:
      raise DaslError(f'--bootstrap_iters must be >= 1, got {bootstrap_iters}')
    self.bootstrap_iters = bootstrap_iters
    # The mean face under the mean pose: the FLM a 4-channel model starts from.
    self.mean_lms68 = np.asarray(mm.landmarks2d(self.lm_model, jnp.asarray(self.stats.mean),
                                                self.convention))
    self._fns = {}

  @classmethod
  def from_parts(cls, module, variables, model_config, param_stats, landmark_model, **kw):
    """A predictor from a network and its constants (e.g. a training run's state)."""
    return cls(ckpt.Restored(module, variables, model_config, param_stats, None),
               landmark_model, **kw)

  @property
  def in_channels(self):
    return self.config.in_channels

  def predict_many(self, crops, n, points18=None, iters=None, batch_size=None,
                   progress=True, desc='predict'):
    """Many crops read batch by batch (benchmarks): fixed-size batches, split over
    host devices when there are several.

    Args:
      crops: index array (b,) -> (b, 120, 120, 3) uint8, or an (n, ...) array.
      points18: optional (n, 18, 2) FLM points (4-channel models: one pass);
        without them a 4-channel model bootstraps (``iters`` passes).
    Returns:
      dict as :meth:`predict_crops`.
    """
    passes = 0
    if self.in_channels == 4 and points18 is None:
      passes = self.bootstrap_iters if iters is None else iters
    return core.predict_crops(self._fn(passes), self.variables, self.stats, self.lm_model,
                              crops, n, points18, None, batch_size or self.batch_size,
                              progress=progress, desc=desc)

  def _fn(self, iters):
    if iters not in self._fns:
      self._fns[iters] = core.make_forward(self.module, self.in_channels, self.convention, iters)
    return self._fns[iters]

  def predict_crops(self, crops, lms68=None, iters=None, points18=None, mask18=None):
    """Run the regressor on crops, in batches.

    Args:
      crops: (F, 120, 120, 3) uint8 BGR.
      lms68: optional (F, 68, 2) detector landmarks in crop pixels (FLM input of
        4-channel models: one pass). Without them a 4-channel model bootstraps.
      iters: bootstrap passes (default: the predictor's).
      points18: optional (F, 18, 2) FLM points given directly (instead of lms68).
      mask18: optional (F, 18) visibility of ``points18`` (0: not drawn).
    Returns:
      dict of numpy arrays: ``whitened`` (F, 62), ``params`` (F, 62) de-whitened,
      ``lms68`` (F, 68, 2) crop pixels, ``pose`` (F, 3) yaw, pitch, roll degrees.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (camera.CROP_SIZE, camera.CROP_SIZE, 3):
      raise DaslError(f'crops: expected (F, 120, 120, 3) uint8, got {crops.shape}')
    if points18 is None and lms68 is not None:
      points18 = L.select18_np(np.asarray(lms68, np.float32))
      mask18 = None
    passes = 0
    if self.in_channels == 4 and points18 is None:
      passes = self.bootstrap_iters if iters is None else iters
    return core.predict_crops(self._fn(passes), self.variables, self.stats, self.lm_model,
                              crops, len(crops), points18, mask18, self.batch_size, pad='pow2')


def dense_vertices(model: mm.MorphableModel, params, convention):
  """Dense vertices in crop pixels with depth: (F, 62) -> (F, N, 3)."""
  return np.asarray(_dense_jit(model, jnp.asarray(params, jnp.float32), convention))


@functools.partial(jax.jit, static_argnames=('convention',))
def _dense_jit(model, params, convention):
  return mm.vertices2d(model, params, convention)


def to_image_space(verts_crop, roi_box, size=camera.CROP_SIZE):
  """Crop-pixel vertices (x, y, z) -> image pixels, z scaled like x and y.

  3DDFA_V2's ``similar_transform``: x, y through the ROI box; z times the mean
  crop->image scale, shifted so its minimum is 0 (the pixel convention's
  offsets are already in ``vertices2d``'s x, y).

  Args:
    verts_crop: (N, 3); roi_box: (4,).
  Returns:
    (N, 3) float32.
  """
  v = np.asarray(camera.crop_to_image_3d(np.asarray(verts_crop, np.float64),
                                        np.asarray(roi_box, np.float64), size))
  return np.concatenate([v[:, :2], v[:, 2:] - v[:, 2:].min()], 1).astype(np.float32)


# ----------------------------------------------------------------------------
# One image, end to end.


@dataclasses.dataclass
class Face:
  """One predicted face, everything in original-image pixels.

  box (5,) FaceBoxes-like x1, y1, x2, y2, score; roi_box (4,); kind: how the
  face was found; params (62,) de-whitened; pose (3,) yaw, pitch, roll in
  degrees; lms68 (68, 2) image pixels; crop (120, 120, 3) uint8;
  lms68_crop (68, 2); flm: 'detector', 'bootstrap' or 'none' (3 channels).
  """
  box: np.ndarray
  roi_box: np.ndarray
  kind: str
  params: np.ndarray
  pose: np.ndarray
  lms68: np.ndarray
  crop: np.ndarray
  lms68_crop: np.ndarray
  flm: str

  def record(self):
    return {'box': [round(float(v), 2) for v in self.box[:4]],
            'score': round(float(self.box[4]), 4), 'detector': self.kind,
            'roi_box': [round(float(v), 3) for v in self.roi_box],
            'params': [float(v) for v in self.params],
            'yaw': round(float(self.pose[0]), 3), 'pitch': round(float(self.pose[1]), 3),
            'roll': round(float(self.pose[2]), 3), 'flm': self.flm,
            'landmarks68': [[round(float(x), 3), round(float(y), 3)] for x, y in self.lms68]}


def _match_landmarks(boxes, lms):
  """For each box, the landmark set whose centre lies inside it (nearest centre)."""
  out = []
  centres = lms.mean(axis=1)
  for b in boxes:
    c = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    inside = ((centres[:, 0] >= b[0]) & (centres[:, 0] <= b[2]) &
              (centres[:, 1] >= b[1]) & (centres[:, 1] <= b[3]))
    if not inside.any():
      out.append(None)
      continue
    d = np.where(inside, np.linalg.norm(centres - c, axis=1), np.inf)
    out.append(lms[int(np.argmin(d))])
  return out


def predict_image(predictor: Predictor, image, detector=None, boxes=None, lms68=None,
                  min_face=0, name='image') -> tuple:
  """Faces of one image.

  The faces come from, in order: ``boxes`` (FaceBoxes-like, the ROI by
  3DDFA_V2's rule); else ``lms68`` (the ROI by 3DDFA v1's landmark rule);
  else ``detector``. Detector landmarks (``lms68``), when given, also feed the
  FLM of a 4-channel model.

  Args:
    image: (H, W, 3) uint8 BGR.
    detector: anything with ``detections(image) -> list of detect.Detection``
      (:func:`make_detector`: FaceBoxes or Haar), or None.
    boxes: (F, 5) or None; lms68: (F, 68, 2) image pixels or None.
    min_face: skip faces whose box side (mean of width and height) is smaller.
  Returns:
    (list of :class:`Face`, list of messages about skipped faces).
  """
  messages = []
  face_lms = None
  if boxes is not None and len(boxes):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
    kinds = ['file'] * len(boxes)
    face_lms = _match_landmarks(boxes, lms68) if lms68 is not None else None
    rois = C.roi_box_from_bbox(boxes)
  elif lms68 is not None and len(lms68):
    face_lms = list(np.asarray(lms68, np.float64))
    rois = C.roi_box_from_landmarks(np.asarray(lms68))
    lo, hi = np.min(lms68, axis=1), np.max(lms68, axis=1)
    boxes = np.concatenate([lo, hi, np.ones((len(lo), 1))], 1)
    kinds = ['landmarks'] * len(boxes)
  elif detector is not None:
    dets = detector.detections(image)
    boxes = np.asarray([d.box for d in dets]).reshape(-1, 5)
    kinds = [d.kind for d in dets]
    rois = C.roi_box_from_bbox(boxes) if len(boxes) else np.zeros((0, 4))
  else:
    boxes, kinds, rois = np.zeros((0, 5)), [], np.zeros((0, 4))
  keep = []
  for i, b in enumerate(boxes):
    side = ((b[2] - b[0]) + (b[3] - b[1])) / 2
    if side < min_face:
      messages.append(f'{name}: face {i} at {np.round(b[:4]).astype(int).tolist()} is '
                      f'{side:.0f} px, below --min_face {min_face}: skipped')
    else:
      keep.append(i)
  if not keep:
    return [], messages
  rois = np.asarray(rois)[keep]
  boxes = boxes[keep]
  kinds = [kinds[i] for i in keep]
  crops = C.crop_faces(image, rois)
  crop_lms = None
  flm = 'none' if predictor.in_channels == 3 else 'bootstrap'
  if face_lms is not None and predictor.in_channels == 4:
    sel = [face_lms[i] for i in keep]
    if all(s is not None for s in sel):
      crop_lms = np.asarray(camera.image_to_crop(np.stack(sel).astype(np.float32), rois))
      flm = 'detector'
    elif any(s is not None for s in sel):
      messages.append(f'{name}: some boxes have no matching landmarks; '
                      'all faces of this image use the self-bootstrapped FLM')
  out = predictor.predict_crops(crops, crop_lms)
  img_lms = np.asarray(camera.crop_to_image(out['lms68'], rois))
  poses = out['pose']
  faces = [Face(box=boxes[i], roi_box=rois[i], kind=kinds[i], params=out['params'][i],
                pose=poses[i], lms68=img_lms[i], crop=crops[i], lms68_crop=out['lms68'][i],
                flm=flm) for i in range(len(rois))]
  return faces, messages


# ----------------------------------------------------------------------------
# The command's outputs.


DETECTORS = ('faceboxes', 'haar')


def make_detector(kind='faceboxes', faceboxes_weights=None, profile=True):
  """The face detector by name.

  Args:
    kind: 'faceboxes' (3DDFA_V2's detector; weights ``faceboxes_weights`` or
      ``$DASL_ASSETS/pretrained/FaceBoxesProd.pth``) or 'haar' (OpenCV only;
      ``profile``: also the profile cascade).
  Raises:
    DaslError: unknown kind, or FaceBoxes weights missing or of another network.
  """
  if kind == 'faceboxes':
    from dasl_jax import faceboxes
    return faceboxes.FaceBoxesDetector(faceboxes_weights)
  if kind == 'haar':
    return detect.HaarDetector(profile=profile)
  raise DaslError(f'--detector must be one of {", ".join(DETECTORS)}, got {kind!r}')


BACKENDS = ('jax', 'onnxruntime')


class Runner:
  """``experiments.predict`` as a class: the model, the detector, and what to write
  for each image or video (JSON records, overlays, meshes, depth and normal maps).

  The detector (``detector``: 'faceboxes' or 'haar', see :func:`make_detector`) is
  built first, so missing weights fail before the model loads, and only when
  faces are not all given by a ``boxes`` file. ``dot_dtype`` 'bfloat16' runs a
  MobileNetV1's stem and 1x1 products on bf16 operands
  (:func:`dasl_jax.checkpoint.with_dot_dtype`); ``mesh_axes``: see
  :mod:`dasl_jax.mesh_io`.
  """

  def __init__(self, checkpoint, out, bfm=None, boxes=None, landmarks=None, min_face=24,
               bootstrap_iters=2, batch_size=32, depth=False, meshes=True, overlay=True,
               profile=True, alpha=visualize.DEFAULT_ALPHA, detector='faceboxes', faceboxes_weights=None,
               mesh_axes='3ddfa', dot_dtype='float32', backend='jax'):
    if mesh_axes not in mesh_io.MESH_AXES:
      raise DaslError(f'--mesh_axes must be one of {", ".join(mesh_io.MESH_AXES)}, '
                      f'got {mesh_axes!r}')
    self.mesh_axes = mesh_axes
    self.detector = (make_detector(detector, faceboxes_weights, profile)
                     if boxes is None else None)
    if dot_dtype not in ckpt.DOT_DTYPES:  # before the (slow) restore
      raise DaslError(f'--dot_dtype: must be one of {", ".join(ckpt.DOT_DTYPES)}, '
                      f'got {dot_dtype!r}')
    if backend not in BACKENDS:  # before the restore, as dot_dtype
      raise DaslError(f'--backend must be one of {", ".join(BACKENDS)}, got {backend!r}')
    if backend == 'onnxruntime' and dot_dtype != 'float32':
      raise DaslError('--dot_dtype bfloat16: only with --backend jax (the ONNX graph is float32)')
    self.restored = ckpt.with_dot_dtype(ckpt.restore(checkpoint), dot_dtype)
    self.models = face_models(self.restored, bfm)
    if backend == 'onnxruntime':
      from dasl_jax.onnx_export import OnnxPredictor
      self.predictor = OnnxPredictor(self.restored, self.models.landmarks,
                                     batch_size=batch_size, bootstrap_iters=bootstrap_iters)
    else:
      self.predictor = Predictor(self.restored, self.models.landmarks,
                                 batch_size=batch_size, bootstrap_iters=bootstrap_iters)
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

  def faces(self, image, name):
    key = Path(name).name
    boxes = self.boxes.get(key) if self.boxes is not None else None
    lms = self.landmarks.get(key) if self.landmarks is not None else None
    if self.boxes is not None and boxes is None:
      return [], [f'{name}: no boxes for this image in --boxes: no faces']
    if boxes is not None and not len(boxes):
      return [], []  # listed in --boxes with no box: no face
    return predict_image(self.predictor, image, self.detector, boxes=boxes,
                         lms68=lms, min_face=self.min_face, name=name)

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
      print(m, file=sys.stderr)
    if not faces:
      msg = f'{path}: no face found'
      print(msg, file=sys.stderr)
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
           'model': self.models.note, 'convention': self.predictor.convention}
    (Path(str(stem) + '.json')).write_text(json.dumps(rec, indent=1) + '\n')
    return rec

  def video(self, path, every=1, track=True, smooth=VT.DEFAULT_SMOOTH):
    """Every ``every``-th frame of a video: ``STEM.jsonl`` (one JSON object per
    frame, written as the frames come), ``STEM.json`` (all frames) and
    ``STEM_overlay.mp4``.

    ``track``: follow faces by alignment and re-detect only when lost
    (:class:`dasl_jax.video_tracking.Tracker`); ``smooth``: centred window of
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

    tracker = VT.Tracker(self.faces, align, enabled=track)
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
    except DaslError as e:
      error = str(e)
      if last == 0:  # not one frame: nothing to keep
        jsonl.close()
        Path(str(stem) + '.jsonl').unlink()
        bar.close()
        raise
      print(f'error: {error}', file=sys.stderr)
    finally:
      for ready in smoother.flush():
        emit(ready)
      jsonl.close()
      bar.close()
      if state['writer']:
        state['writer'].release()
    rec = {'video': str(path), 'every': every, 'track': bool(track), 'smooth': window,
           'frames': frames, 'model': self.models.note,
           'convention': self.predictor.convention}
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
    return dataclasses.replace(face, params=p, pose=pose, lms68=img, lms68_crop=crop)
