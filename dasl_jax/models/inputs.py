"""The network's input: normalised colour plus the landmark map (FLM) channel.

The one place for the colour normalisation ``(x - 127.5) / 128`` (BGR, as the
released models read crops with OpenCV) and for stacking the FLM channel.
"""
from __future__ import annotations

import jax.numpy as jnp

from dasl_jax.geometry import landmarks


def normalize_image(image):
  """(..., H, W, 3) uint8 or float BGR in [0, 255] -> float32 ``(x - 127.5) / 128``."""
  return (jnp.asarray(image, jnp.float32) - 127.5) / 128.0


def model_input(image, points=None, mask=None, in_channels=4):
  """Build the network input.

  Args:
    image: (B, H, W, 3) BGR pixels in [0, 255] (uint8 or float).
    points: (B, K, 2) crop-pixel landmarks for the FLM (usually the 18); needed
      when ``in_channels == 4``.
    mask: optional (B, K) visibility; invisible points are not drawn.
    in_channels: 3 (colour only) or 4 (colour + FLM).
  Returns:
    (B, H, W, in_channels) float32.
  """
  x = normalize_image(image)
  if in_channels == 3:
    return x
  if in_channels != 4:
    raise ValueError(f'in_channels must be 3 or 4, got {in_channels}')
  if points is None:
    raise ValueError('a 4-channel model needs landmarks for its FLM channel')
  m = landmarks.flm(points, mask, size=x.shape[-2])
  return jnp.concatenate([x, m[..., None]], axis=-1)
