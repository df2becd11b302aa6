"""The FLM map (``geometry.landmarks.flm``) drawn by a plain loop: the reference the
landmark and model-input tests compare with."""
import numpy as np


def flm_ref(points, mask=None, size=120):
  """Plain loop: -1 map, +1 at (row = clamp(floor(y)), col = clamp(floor(x)))."""
  out = -np.ones((size, size), np.float32)
  for k, (x, y) in enumerate(points):
    if mask is not None and mask[k] <= 0:
      continue
    if not (np.isfinite(x) and np.isfinite(y)):
      continue
    col = min(max(int(np.floor(x)), 0), size - 1)
    row = min(max(int(np.floor(y)), 0), size - 1)
    out[row, col] = 1
  return out
