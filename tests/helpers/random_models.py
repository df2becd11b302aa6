"""Small random checkpoints for the inference, export and notebook tests.

A MobileNet of width 0.25 with random weights, whitening statistics that put
the synthetic face model's mean face in the middle of the crop, and a
``flags.json`` saying it was trained on the synthetic model (so inference
uses the built-in synthetic model and needs no assets).
"""
import json

import jax
import numpy as np

from dasl_jax.io import checkpoint
from dasl_jax.geometry import params as P
from dasl_jax.models import ModelConfig

SCALE = 6e-4  # synthetic face ~150,000 units wide -> about 90 crop pixels


def tiny_stats():
  mean = np.zeros(62, np.float32)
  # Translations off the integers: the synthetic mean face has landmarks at
  # round heights, and an FLM pixel must not depend on float32 rounding.
  mean[:12] = [SCALE, 0, 0, 60.37, 0, SCALE, 0, 60.29, 0, 0, SCALE, 0]
  std = np.full(62, 0.3, np.float32)
  std[:12] = [SCALE * 0.05] * 3 + [2.0] + [SCALE * 0.05] * 3 + [2.0] + [SCALE * 0.05] * 3 + [1.0]
  return P.ParamStats(mean, std, 'tests/helpers/random_models.py')


def random_variables(cfg, seed=0):
  """Random variables of the right names and shapes, without compiling the model's
  initialisers (``module.init`` compiles the whole network and the random-number code
  of every initialiser: 10 to 30 s per network on an AVX2 CPU, more when busy)."""
  return fill_random(checkpoint.expected_shapes(cfg), seed)


def fill_random(shapes, seed=0):
  """numpy-drawn values for a pytree of ShapeDtypeStruct (``jax.eval_shape`` of an
  ``init``): He-normal kernels, BN scales and variances 1, shifts and means 0."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']") or name.endswith("['scale']"):
      return np.ones(s.shape, np.float32)
    if name.endswith("['mean']") or name.endswith("['bias']"):
      return np.zeros(s.shape, np.float32)
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
    if len(s.shape) == 4 and s.shape[2] == 1:  # depthwise (3, 3, 1, C)
      fan_in = 9
    std = np.sqrt(2.0 / fan_in) * (10.0 if 'fc_param' in name else 1.0)
    return rng.normal(0, std, s.shape).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def make_checkpoint(path, in_channels=4, width=0.25, seed=0, convention='v1'):
  """Save a random tiny regressor as a model work directory; returns the path."""
  cfg = ModelConfig(arch='mobilenet', width=width, in_channels=in_channels,
                    convention=convention)
  checkpoint.save_model(path, cfg, random_variables(cfg, seed), tiny_stats())
  (path / 'flags.json').write_text(json.dumps({'data': {'source_3d': 'synthetic'}}))
  return path
