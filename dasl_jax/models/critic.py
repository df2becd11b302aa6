"""2DASL's self-critic: an image encoder z(I) and an MLP scoring (z, p) pairs.

The critic learns to tell real pairs (3D-annotated image, its ground-truth
parameters) from fake ones (in-the-wild image, the regressor's prediction).
The paper's head is an MLP 512 -> 1024 -> 1024 -> 1 on ``concat(z, p)``; the
encoder is not specified beyond giving a 512-d latent, so a small strided conv
net is used (it is trained with the critic, never with the regressor).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class ImageEncoder(nn.Module):
  """(B, H, W, C) float -> (B, latent_dim): strided 3x3 convs, global pooling, Dense."""
  widths: Sequence[int] = (16, 32, 64, 128)
  latent_dim: int = 512

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = nn.Conv(w, (3, 3), (2, 2), padding=1, name=f'conv{i}')(x)
      x = nn.leaky_relu(x, 0.2)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.latent_dim, name='latent')(x)


class SelfCritic(nn.Module):
  """Scores ``(image, params)`` pairs: (B, H, W, C), (B, 62) -> (B,) logits.

  No batch norm, so real and fake batches can be scored separately without the
  critic's statistics depending on which batch came first.
  """
  encoder_widths: Sequence[int] = (16, 32, 64, 128)
  latent_dim: int = 512
  hidden: Sequence[int] = (1024, 1024)

  def setup(self):
    self.encoder = ImageEncoder(self.encoder_widths, self.latent_dim)
    self.mlp = [nn.Dense(h, name=f'fc{i}') for i, h in enumerate(self.hidden)]
    self.out = nn.Dense(1, name='logit')

  def encode(self, image):
    """(B, H, W, C) -> (B, latent_dim)."""
    return self.encoder(image)

  def score(self, z, params):
    """(B, latent_dim), (B, P) -> (B,) logits."""
    h = jnp.concatenate([z, params], axis=-1)
    for layer in self.mlp:
      h = nn.leaky_relu(layer(h), 0.2)
    return self.out(h)[..., 0]

  def __call__(self, image, params):
    return self.score(self.encode(image), params)
