"""Images and videos in: any photo as BGR uint8 (grey, RGBA, 16-bit, EXIF),
video frames, frame rate."""
from __future__ import annotations

from pathlib import Path

import cv2
import jax
import numpy as np

from dasl_jax.errors import BadInput, DaslError

from dasl_jax.io.input_files import VIDEO_SUFFIXES


# ----------------------------------------------------------------------------
# Images.


def load_image(path) -> np.ndarray:
  """Read a photo as (H, W, 3) uint8 BGR.

  Grey images are expanded to three channels; RGBA images are composited over
  white (a transparent background would otherwise come out black, or as
  whatever colour the hidden pixels hold); 16-bit images are scaled to 8 bits;
  the EXIF orientation tag is applied (OpenCV 4.x's ``IMREAD_COLOR`` does this
  for JPEGs; ``tests/inference/test_inference.py`` checks it on a rotated JPEG).

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
    BadInput: a frame of another size than the first (tracking, smoothing and
      the overlay video assume one frame size).
  """
  cap = cv2.VideoCapture(str(path))
  if not cap.isOpened():
    raise DaslError(f'{path}: cannot open the video (missing, truncated or corrupt file, '
                    'or no OpenCV decoder for it)')
  try:
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    i, size = 0, None
    while True:
      ok, frame = cap.read()
      if not ok:
        break
      size = size or frame.shape[:2]
      if frame.shape[:2] != size:
        raise BadInput(f'{path}: frame {i} is {frame.shape[1]} x {frame.shape[0]} px, the '
                       f'frames before it {size[1]} x {size[0]}; a video whose frames '
                       'change size is not supported (re-encode it at one size)')
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


