"""The 62-parameter layout and its whitening: the one place that knows them.

A parameter vector ``p`` (62,) is, as in 3DDFA and 2DASL:

* ``p[0:12]``  pose, the row-major 3x4 matrix ``[f*R | t]``;
* ``p[12:52]`` 40 shape coefficients;
* ``p[52:62]`` 10 expression coefficients.

Networks predict whitened parameters ``(p - mean) / std``. Two statistics files
exist (3DDFA's ``param_whitening.pkl`` with keys ``param_mean``/``param_std``,
3DDFA_V2's ``param_mean_std_62d_120x120.pkl`` with ``mean``/``std``); they
differ, and a checkpoint is tied to the one it was trained with.
"""
from __future__ import annotations

import dataclasses
import functools
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.errors import DaslError

N_PARAMS = 62
N_POSE = 12
N_SHAPE = 40
N_EXP = 10
POSE = slice(0, 12)
SHAPE = slice(12, 52)
EXP = slice(52, 62)
# Index of the z translation: it does not affect a weak-perspective projection.
TZ_INDEX = 11


def split(p):
  """Split parameters into their parts.

  Args:
    p: (..., 62) de-whitened parameters.
  Returns:
    fR (..., 3, 3) scaled rotation, t (..., 3) translation,
    alpha_shp (..., 40), alpha_exp (..., 10).
  """
  pose = p[..., POSE].reshape(p.shape[:-1] + (3, 4))
  return pose[..., :3], pose[..., 3], p[..., SHAPE], p[..., EXP]


def join(fR, t, alpha_shp, alpha_exp):
  """Inverse of :func:`split`: (..., 3, 3), (..., 3), (..., 40), (..., 10) -> (..., 62)."""
  pose = jnp.concatenate([fR, t[..., :, None]], axis=-1)
  pose = pose.reshape(pose.shape[:-2] + (12,))
  return jnp.concatenate([pose, alpha_shp, alpha_exp], axis=-1)


@functools.partial(jax.tree_util.register_dataclass, data_fields=['mean', 'std'],
                   meta_fields=['source'])
@dataclasses.dataclass(frozen=True)
class ParamStats:
  """Whitening statistics: mean (62,), std (62,), and the file they came from.

  A pytree (leaves ``mean``, ``std``; ``source`` is static), so jitted code
  takes the statistics as one argument instead of loose arrays.
  """
  mean: np.ndarray
  std: np.ndarray
  source: str = ''

  def whiten(self, p):
    """(..., 62) parameters -> (..., 62) whitened."""
    return (p - self.mean) / self.std

  def dewhiten(self, pw):
    """(..., 62) whitened -> (..., 62) parameters."""
    return pw * self.std + self.mean


def whiten(p, stats: ParamStats):
  """(..., 62) -> (..., 62): ``(p - mean) / std``."""
  return stats.whiten(p)


def dewhiten(pw, stats: ParamStats):
  """(..., 62) -> (..., 62): ``pw * std + mean``."""
  return stats.dewhiten(pw)


def _checked(mean, std, source):
  mean = np.asarray(mean, np.float32).reshape(-1)
  std = np.asarray(std, np.float32).reshape(-1)
  if mean.shape != (N_PARAMS,) or std.shape != (N_PARAMS,):
    raise DaslError(f'{source}: whitening statistics must have 62 values each, '
                    f'got mean {mean.shape} and std {std.shape}')
  if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
    raise DaslError(f'{source}: whitening statistics hold NaN or inf')
  if np.any(std <= 0):
    raise DaslError(f'{source}: whitening std has non-positive entries at '
                    f'{np.flatnonzero(std <= 0).tolist()}')
  return ParamStats(mean, std, source)


def load_param_stats(path) -> ParamStats:
  """Load whitening statistics from any of the formats users have.

  * 3DDFA ``param_whitening.pkl``: dict with ``param_mean``, ``param_std``;
  * 3DDFA_V2 ``param_mean_std_62d_120x120.pkl``: dict with ``mean``, ``std``;
  * a folder with ``param_mean.txt`` and ``param_std.txt`` (``keypoints68/``).
  """
  path = Path(path)
  if path.is_dir():
    files = [path / 'param_mean.txt', path / 'param_std.txt']
    for f in files:
      if not f.exists():
        raise DaslError(f'{path}: no {f.name} here (expected a statistics .pkl '
                        'or a folder with param_mean.txt and param_std.txt)')
    try:
      return _checked(np.loadtxt(files[0]), np.loadtxt(files[1]), str(path))
    except ValueError as e:
      raise DaslError(f'{path}: cannot parse statistics text: {e}') from None
  if not path.exists():
    raise DaslError(f'{path}: whitening statistics file not found')
  try:
    with open(path, 'rb') as f:
      d = pickle.load(f, encoding='latin1')
  except Exception as e:  # truncated or not a pickle
    raise DaslError(f'{path}: not a readable pickle ({type(e).__name__}: {e})') from None
  if not isinstance(d, dict):
    raise DaslError(f'{path}: expected a dict of whitening statistics, got {type(d).__name__}')
  for mk, sk in (('param_mean', 'param_std'), ('mean', 'std')):
    if mk in d and sk in d:
      return _checked(d[mk], d[sk], str(path))
  raise DaslError(f'{path}: no whitening keys; expected param_mean/param_std '
                  f'(3DDFA) or mean/std (3DDFA_V2), found {sorted(d)}')
