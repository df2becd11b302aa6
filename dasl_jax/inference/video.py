"""Video: tracking faces by alignment, and temporal smoothing of the 62 parameters.

Tracking (3DDFA_V2's ``demo_video`` idea): the ROI box of frame ``t + 1`` is
cut around frame ``t``'s 68 predicted landmarks with 3DDFA's landmark crop
rule (:func:`dasl_jax.geometry.crop.roi_box_from_landmarks`), so the detector only runs
on the first frame and when a track is lost. A track is *lost* (measurable
rules of :func:`check_roi`, all on the ROI box the landmarks give) when

* a landmark is not finite;
* the ROI side is below ``min_side`` pixels;
* the ROI side changed by more than a factor ``max_scale_change`` against the
  ROI of the frame before (a face does not double in size in one frame; a
  regressor that lost the face gives collapsed or exploded landmarks);
* the ROI centre moved by more than ``max_shift`` ROI sides in one frame;
* less than ``min_inside`` (85%) of the ROI's area lies inside the frame: a face
  the frame's edge cuts is not followed. For an ROI larger than the frame (a close-up:
  its margins stick out wherever it is) the share is taken of the most such a box can
  have inside (:func:`roi_inside_share`), so a centred close-up is kept. Measured on 8 clips (4 AFLW2000-3D
  photos, each sliding out of a 320x240 frame to the right and to the left over
  80 frames, tracking with the rule lowered to 40% to watch): the regressor
  squeezes a cut face into the frame, turning it (yaw drifted up to 50 degrees,
  NME up to 25%) while the ROI of its landmarks stayed 70-75% inside; with 85%
  every track ended before its yaw moved more than 4.2 degrees (NME at most
  4.1%), when 89-99% of the face was still inside; 88% would end them a few
  frames earlier, with the whole face still inside (2.0 degrees).

The rules are checked on the landmarks just predicted against the ROI they
were predicted in; when one fails, the same frame is re-detected (a detection
near a lost track's last place keeps its track id). Detected faces obey the
``min_inside`` rule too (on the landmark ROI of their prediction): in a video a
face cut by the frame's edge is not reported, since its parameters are wrong.

Faces that enter later: while tracking, the detector also runs every
``detect_every`` frames (``--detect_every``, :data:`DEFAULT_DETECT_EVERY`);
a detection whose box centre lies in no tracked face's landmark box starts a
new track.

Smoothing: a centred moving average over ``window`` frames of each track's
parameters (``--smooth 3``, the default: one frame before, one after; 0 or 1:
off). The choice: videos are files here, so a centred window costs only
``window // 2`` frames of delay and, unlike a causal EMA, has no lag on a
steadily moving face (the centred mean of a linear motion is the motion
itself); white noise in the parameters drops by sqrt(window), while a curving
motion is cut short in proportion to window^2. Measured
(``benchmarks/video_tracking.py``, a face swaying +-12 degrees and +-12% of
the frame in 60 frames): tracked jitter 0.45% -> 0.24% of the face size with
3 or 5 frames, landmark error 2.71% (raw) -> 2.70% (3), 2.75% (5), 3.27% (9):
3 frames take the whole jitter gain without the bias. 3DDFA_V2's
``demo_video_smooth`` also averages one frame either side.

Parameters of different frames live in different crops (each frame has its own
ROI box), so before averaging each frame's pose is re-expressed in the crop of
the frame being smoothed (:func:`params_to_roi`: exact, the crop <-> image map
is a per-axis scale and shift). The scaled rotations are averaged entry-wise
(for the small rotations within a few frames this stays within float noise of
the rotation mean). Landmarks are then recomputed from the smoothed parameters.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Dict, List, Optional

import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.geometry import crop as C


# ----------------------------------------------------------------------------
# Tracking by alignment.


DEFAULT_SMOOTH = 3  # --smooth: frames of the centred window (module docstring)
# --detect_every: while tracking, the detector also runs every this many frames so that
# faces entering later start tracks (module docstring: "Faces that enter later").
DEFAULT_DETECT_EVERY = 10


@dataclasses.dataclass(frozen=True)
class TrackRules:
  """When a track counts as lost (see the module docstring)."""
  min_side: float = 24.0
  max_scale_change: float = 1.5
  max_shift: float = 0.5
  min_inside: float = 0.85


def roi_inside_fraction(roi, height, width):
  """Fraction of an ROI box's area inside a ``height`` x ``width`` frame.

  Args:
    roi: (4,) ``sx, sy, ex, ey``.
  Returns:
    float in [0, 1] (0 for an empty box).
  """
  sx, sy, ex, ey = [float(v) for v in roi]
  area = (ex - sx) * (ey - sy)
  if not area > 0:
    return 0.0
  iw = max(0.0, min(ex, width) - max(sx, 0.0))
  ih = max(0.0, min(ey, height) - max(sy, 0.0))
  return iw * ih / area


def roi_inside_share(roi, height, width):
  """:func:`roi_inside_fraction` over the most a box of that size can have inside the
  frame: a close-up face whose landmark crop is larger than the frame (its margins
  always stick out) scores 1 when centred, and falls only as the face leaves.

  Boxes that fit in the frame get exactly :func:`roi_inside_fraction`.

  Args:
    roi: (4,) ``sx, sy, ex, ey``.
  Returns:
    float in [0, 1].
  """
  sx, sy, ex, ey = [float(v) for v in roi]
  if not (ex > sx and ey > sy):
    return 0.0
  most = min(1.0, width / (ex - sx)) * min(1.0, height / (ey - sy))
  return min(1.0, roi_inside_fraction(roi, height, width) / most)


def check_roi(lms68, prev_roi, height, width, rules: TrackRules = TrackRules()):
  """The next ROI box from landmarks, or why the track is lost.

  Args:
    lms68: (68, 2) image-pixel landmarks of the frame before.
    prev_roi: (4,) the ROI box those landmarks were predicted in, or None.
    height, width: the frame size.
  Returns:
    (roi (4,) float64 or None, reason str or None): exactly one is None.
  """
  lms = np.asarray(lms68, np.float64)
  if lms.shape != (68, 2) or not np.isfinite(lms).all():
    return None, 'non-finite landmarks'
  roi = C.roi_box_from_landmarks(lms)
  side = roi[2] - roi[0]
  if not side >= rules.min_side:
    return None, f'ROI side {side:.1f} px < {rules.min_side:g}'
  if prev_roi is not None:
    prev = np.asarray(prev_roi, np.float64)
    pside = prev[2] - prev[0]
    ratio = side / pside
    if not 1 / rules.max_scale_change <= ratio <= rules.max_scale_change:
      return None, f'ROI side changed x{ratio:.2f} in one frame'
    shift = np.hypot(*((roi[:2] + roi[2:]) / 2 - (prev[:2] + prev[2:]) / 2)) / pside
    if shift > rules.max_shift:
      return None, f'ROI centre moved {shift:.2f} ROI sides in one frame'
  inside = roi_inside_share(roi, height, width)
  if inside < rules.min_inside:
    return None, f'only {100 * inside:.0f}% of the ROI inside the frame'
  return roi, None


# ----------------------------------------------------------------------------
# Parameters between crops.


def _axis_maps(convention, size=camera.CROP_SIZE):
  """Crop pixel ``u = X + a``, ``v = c - Y`` (camera X, Y): returns (a, c),
  read from :func:`camera.pixel_affine_np` (the y-flip's one definition)."""
  A, b = camera.pixel_affine_np(convention, size)
  assert np.allclose(A, [[1, 0], [0, -1]]), A  # both conventions: x kept, y flipped
  return float(b[0]), float(b[1])


def params_to_roi(params, roi_from, roi_to, convention, size=camera.CROP_SIZE):
  """Re-express parameters predicted in one crop in another crop of the same image.

  Image pixels are ``x = sx + kx * (X + a)``, ``y = sy + ky * (c - Y)`` with
  ``k = (e - s) / size`` and the convention's offsets (:func:`camera.to_crop_pixels`),
  so moving to another ROI scales the pose rows by ``r = k_from / k_to`` and
  shifts the translation; z is scaled by the mean of the x and y ratios.
  Shape and expression coefficients do not change.

  Args:
    params: (..., 62) de-whitened parameters; roi_from, roi_to: (..., 4).
  Returns:
    (..., 62) float64: the same image landmarks through ``roi_to``.
  """
  a, c = _axis_maps(convention, size)
  p = np.array(params, np.float64, copy=True)
  f = np.asarray(roi_from, np.float64)
  t = np.asarray(roi_to, np.float64)
  kf = (f[..., 2:4] - f[..., 0:2]) / size
  kt = (t[..., 2:4] - t[..., 0:2]) / size
  rx, ry = kf[..., 0] / kt[..., 0], kf[..., 1] / kt[..., 1]
  rz = (rx + ry) / 2
  pose = p[..., :12].reshape(p.shape[:-1] + (3, 4))
  tx = pose[..., 0, 3].copy()
  ty = pose[..., 1, 3].copy()
  pose[..., 0, :] *= rx[..., None]
  pose[..., 1, :] *= ry[..., None]
  pose[..., 2, :] *= rz[..., None]
  pose[..., 0, 3] = rx * (tx + a) - a + (f[..., 0] - t[..., 0]) / kt[..., 0]
  pose[..., 1, 3] = c - ry * (c - ty) - (f[..., 1] - t[..., 1]) / kt[..., 1]
  p[..., :12] = pose.reshape(p.shape[:-1] + (12,))
  return p


# ----------------------------------------------------------------------------
# Smoothing.


def smooth_window(window):
  """Check ``--smooth``: 0 or 1 (off) or an odd window >= 3. Returns the int."""
  from dasl_jax.errors import DaslError
  w = int(window)
  if w < 0 or (w > 1 and w % 2 == 0):
    raise DaslError(f'--smooth must be 0 (off) or an odd number of frames, got {window}')
  return max(w, 1)


def smooth_track(params, rois, window, convention, size=camera.CROP_SIZE):
  """Centred moving average of one track's parameters (whole sequence, offline).

  Near the ends the window shrinks symmetrically (frame 0 keeps its own
  parameters), so the first and last frames are not pulled towards the inside.

  Args:
    params: (T, 62) de-whitened, each in its own frame's crop.
    rois: (T, 4) the ROI boxes they were predicted in.
    window: odd number of frames (1: returns a copy).
  Returns:
    (T, 62) float64, each in its own frame's crop (``rois[t]``).
  """
  params = np.asarray(params, np.float64)
  rois = np.asarray(rois, np.float64)
  n = len(params)
  half = window // 2
  out = np.array(params, copy=True)
  for t in range(n):
    h = min(half, t, n - 1 - t)
    if h == 0:
      continue
    sl = slice(t - h, t + h + 1)
    moved = params_to_roi(params[sl], rois[sl], np.broadcast_to(rois[t], rois[sl].shape),
                          convention, size)
    out[t] = moved.mean(0)
  return out


class StreamSmoother:
  """:func:`smooth_track` for a stream of frames with several tracks.

  ``push`` one frame's faces at a time; a frame comes out once ``window // 2``
  later frames are in (or at ``flush``). Each face carries a track id; only
  faces of the same track are averaged (a re-detection starts new tracks, so
  the window never mixes two detections).

  Items are dicts with ``faces``: a list of dicts holding ``track`` (int),
  ``params`` (62,) and ``roi_box`` (4,); anything else is passed through. Out
  come the same dicts with each face's ``params`` replaced by the smoothed ones
  (and ``params_raw`` keeping the prediction).
  """

  def __init__(self, window, convention, size=camera.CROP_SIZE):
    self.window = smooth_window(window)
    self.half = self.window // 2
    self.convention, self.size = convention, size
    self._buf: collections.deque = collections.deque()
    self._done = 0  # frames returned so far
    self._seen = 0  # frames pushed so far
    self._start = 0  # frame number of self._buf[0]

  def _tracks_at(self, idx):
    """{track: (params, roi)} for buffered item ``idx`` (index in the buffer)."""
    return {f['track']: (f.get('params_raw', f['params']), f['roi_box'])
            for f in self._buf[idx]['faces']}

  def _emit(self, idx):
    item = self._buf[idx]
    for face in item['faces']:
      tid = face['track']
      ps, rs = [], []
      # Symmetric window within this track's contiguous run around idx.
      h = 0
      while h < self.half:
        lo, hi = idx - h - 1, idx + h + 1
        if lo < 0 or hi >= len(self._buf):
          break
        a, b = self._tracks_at(lo), self._tracks_at(hi)
        if tid not in a or tid not in b:
          break
        h += 1
      for j in range(idx - h, idx + h + 1):
        p, r = self._tracks_at(j)[tid]
        ps.append(p)
        rs.append(r)
      face['params_raw'] = np.asarray(face['params'])
      if h:
        moved = params_to_roi(np.stack(ps), np.stack(rs),
                              np.broadcast_to(face['roi_box'], (len(rs), 4)),
                              self.convention, self.size)
        face['params'] = moved.mean(0)
      else:
        face['params'] = np.asarray(face['params'], np.float64)
    return item

  def push(self, item) -> List[dict]:
    """Add the next frame; returns the frames now ready (in order)."""
    self._buf.append(item)
    self._seen += 1
    out = []
    while self._done + self.half < self._seen:  # its future window is in
      out.append(self._emit(self._done - self._start))
      self._done += 1
      while self._start < self._done - self.half:  # no longer in any window
        self._buf.popleft()
        self._start += 1
    return out

  def flush(self) -> List[dict]:
    """The frames still held back (end of the video)."""
    out = []
    while self._done < self._seen:
      out.append(self._emit(self._done - self._start))
      self._done += 1
    self._buf.clear()
    self._start = self._seen
    return out


# ----------------------------------------------------------------------------
# The per-frame loop's tracking step.


def same_face(box, lms68):
  """Whether a detection is a tracked face: its box centre lies inside the box of
  the tracked face's 68 landmarks (tight: a neighbour's centre never is).

  Args:
    box: (>=4,) x1, y1, x2, y2; lms68: (68, 2) image pixels.
  """
  c = (np.asarray(box[:2], np.float64) + np.asarray(box[2:4], np.float64)) / 2
  lo, hi = np.min(lms68, axis=0), np.max(lms68, axis=0)
  return bool(np.all(c >= lo) and np.all(c <= hi))


class Tracker:
  """Detect once, then follow each face by alignment until it is lost.

  Args:
    detect: ``detect(frame, name) -> (faces, messages)``; faces have
      ``roi_box`` (4,), ``box`` (5,) and ``lms68`` (68, 2) image pixels
      (:class:`dasl_jax.inference.Face`).
    align: ``align(frame, lms68 (F, 68, 2), name) -> (faces, messages)``: the
      faces predicted in the ROI boxes of the given landmarks (landmark rule).
    enabled: False detects on every frame (``--notrack``).
    rules: :class:`TrackRules`.
    detect_every: while tracking, also detect on every ``detect_every``-th frame
      (counted from the last detection; 0: never): detections that are no
      tracked face (:func:`same_face`) start new tracks (mode ``track+detect``).
  """

  def __init__(self, detect, align, enabled=True, rules: TrackRules = TrackRules(),
               detect_every: int = 0):
    from dasl_jax.errors import DaslError
    if detect_every < 0:
      raise DaslError(f'--detect_every must be >= 0 (0: only when a track is lost), '
                      f'got {detect_every}')
    self.detect, self.align, self.enabled, self.rules = detect, align, enabled, rules
    self.detect_every = int(detect_every)
    self.faces: list = []
    self.ids: List[int] = []
    self._next_id = 0
    self._since_detect = 0  # frames since the detector last ran

  def _new_tracks(self, faces):
    """Start tracks for detected faces; a face that passes :func:`check_roi`
    against a face of the frame before (same size within ``max_scale_change``,
    centre within ``max_shift`` ROI sides: nearest first) keeps its track id,
    so smoothing also works when detecting on every frame."""
    ids = [None] * len(faces)
    pairs = []
    for i, f in enumerate(faces):
      c = (np.asarray(f.roi_box[:2]) + np.asarray(f.roi_box[2:4])) / 2
      for j, g in enumerate(self.faces):
        prev = np.asarray(g.roi_box, np.float64)
        side, pside = f.roi_box[2] - f.roi_box[0], prev[2] - prev[0]
        ratio = side / pside
        shift = np.hypot(*(c - (prev[:2] + prev[2:]) / 2)) / pside
        if (1 / self.rules.max_scale_change <= ratio <= self.rules.max_scale_change
            and shift <= self.rules.max_shift):
          pairs.append((shift, i, j))
    used = set()
    for _, i, j in sorted(pairs):
      if ids[i] is None and j not in used:
        ids[i] = self.ids[j]
        used.add(j)
    for i in range(len(ids)):
      if ids[i] is None:
        ids[i] = self._next_id
        self._next_id += 1
    self.faces, self.ids = list(faces), ids

  def _detect_inside(self, frame, name):
    """The detector's faces, without those the frame's edge cuts (``min_inside`` of
    the landmark ROI of their prediction): their parameters are wrong."""
    h, w = frame.shape[:2]
    faces, messages = self.detect(frame, name)
    keep = []
    for f in faces:
      inside = roi_inside_share(C.roi_box_from_landmarks(np.asarray(f.lms68)), h, w)
      if inside < self.rules.min_inside:
        messages = messages + [f'{name}: a face at the frame\'s edge ({100 * inside:.0f}% of '
                               f'its landmark crop inside, < {100 * self.rules.min_inside:.0f}%):'
                               ' not reported']
      else:
        keep.append(f)
    return keep, messages

  def _track(self, frame, name):
    """Align every tracked face in ``frame``: (faces, messages, None) or
    (None, None, why the tracks are lost)."""
    h, w = frame.shape[:2]
    for f in self.faces:
      _, reason = check_roi(f.lms68, f.roi_box, h, w, self.rules)
      if reason:
        return None, None, reason
    faces, messages = self.align(frame, np.stack([f.lms68 for f in self.faces]), name)
    if len(faces) != len(self.faces):
      return None, None, 'a tracked face fell below --min_face'
    if not all(np.isfinite(f.params).all() for f in faces):
      return None, None, 'non-finite prediction'
    # The prediction itself must pass the rules against the ROI it was made in (a
    # collapsed or exploded face, or one leaving the frame, is re-detected in this frame).
    for f in faces:
      _, reason = check_roi(f.lms68, f.roi_box, h, w, self.rules)
      if reason:
        return None, None, reason
    return faces, messages, None

  def step(self, frame, name):
    """One frame -> (faces, track ids, messages, mode).

    mode: 'detect' (no track to follow), 'track', 'track+detect' (tracked, and
    the periodic detection ran), or 'redetect: <reason>'.
    """
    reason = None
    self._since_detect += 1
    if self.enabled and self.faces:
      faces, messages, reason = self._track(frame, name)
      if reason is None:
        self.faces = list(faces)
        if not (self.detect_every and self._since_detect >= self.detect_every):
          return faces, list(self.ids), messages, 'track'
        self._since_detect = 0
        found, more = self._detect_inside(frame, name)
        new = [f for f in found if not any(same_face(f.box, g.lms68) for g in faces)]
        for f in new:
          self.faces.append(f)
          self.ids.append(self._next_id)
          self._next_id += 1
        return list(self.faces), list(self.ids), messages + more, 'track+detect'
    self._since_detect = 0
    faces, messages = self._detect_inside(frame, name)
    self._new_tracks(faces)
    mode = 'detect' if reason is None else f'redetect: {reason}'
    return faces, list(self.ids), messages, mode


# ----------------------------------------------------------------------------
# A video with known motion (benchmark and tests).


def smooth_motion(n, size, centre, amplitude=0.12, angle_deg=12.0, scale=0.12, seed=0):
  """Known per-frame affine transforms: smooth translation, rotation and scale.

  Frame ``t`` is the photo moved by ``A_t``: a rotation by
  ``angle_deg * sin(2 pi t / n)`` and a scale ``1 + scale * sin(...)`` about
  ``centre``, then a translation along a Lissajous curve of ``amplitude`` x
  the frame size; plus a tiny random phase so different seeds differ.

  Args:
    n: frames; size: (width, height) of the output frames; centre: (2,) the
      point of the photo that lands in the frame's centre at rest.
  Returns:
    (n, 2, 3) float64 affine matrices (photo pixels -> frame pixels).
  """
  rng = np.random.default_rng(seed)
  ph = rng.uniform(0, 0.3, 3)
  w, h = size
  out = np.zeros((n, 2, 3))
  for t in range(n):
    u = 2 * np.pi * t / max(n, 1)
    ang = np.deg2rad(angle_deg) * np.sin(u + ph[0])
    s = 1 + scale * np.sin(2 * u + ph[1])
    c, si = s * np.cos(ang), s * np.sin(ang)
    m = np.array([[c, -si], [si, c]])
    shift = np.array([w * amplitude * np.sin(u + ph[2]), h * amplitude * np.sin(2 * u)])
    dst = np.array([w / 2, h / 2]) + shift
    out[t, :, :2] = m
    out[t, :, 2] = dst - m @ np.asarray(centre, np.float64)
  return out


def apply_affine(points, affine):
  """(K, 2) points, (2, 3) affine -> (K, 2)."""
  p = np.asarray(points, np.float64)
  return p @ affine[:, :2].T + affine[:, 2]


def moved_frames(photo, affines, size, noise=3.0, seed=0, border='reflect'):
  """The photo warped by each affine into ``size`` frames, with pixel noise.

  Args:
    photo: (H, W, 3) uint8 BGR; affines: (n, 2, 3); size: (width, height);
    noise: standard deviation of Gaussian pixel noise (grey levels) per frame,
      independent between frames: the sensor noise that makes a per-frame
      regressor jitter while the true motion is smooth.
    border: 'reflect' (the photo mirrored beyond its edges: no blank wedges
      when it rotates) or 'constant' (black: nothing face-like outside it).
  Yields:
    (height, width, 3) uint8 frames.
  """
  import cv2
  rng = np.random.default_rng(seed)
  for a in affines:
    f = cv2.warpAffine(photo, a.astype(np.float64), tuple(size), flags=cv2.INTER_LINEAR,
                       borderMode=(cv2.BORDER_REFLECT if border == 'reflect'
                                   else cv2.BORDER_CONSTANT))
    if noise > 0:
      f = np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8)
    yield f
