"""Tiny deterministic in-memory data in the ARCHITECTURE.md batch format.

For tests and ``--config.train.fake_data=True`` smoke runs without the data
package: random images, parameters drawn around the whitening mean, and
landmarks that are the parameters' own projections (so every loss is
consistent with its labels). Batch ``i`` of a stream depends only on
``(seed, stream, i)``, so ``get_state``/``set_state`` (the batch index) resume
exactly. Batch sizes are global: with several JAX processes each one yields its
own contiguous slice (process ``k`` of ``n``: rows ``k*B/n .. (k+1)*B/n``) of the
batch one process would yield, so the global batch is the same for any count.
"""
from __future__ import annotations

import jax
import numpy as np

from dasl_jax import assets
from dasl_jax.errors import DaslError
from dasl_jax.geometry import landmarks as lm
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.geometry import params as P


def random_model(seed=0, n_extra=200) -> mm.MorphableModel:
  """A random morphable model with 3DDFA-like magnitudes (68 landmarks + extra vertices).

  Coordinates ~1e5 object units and basis columns scaled so that whitened
  coefficients of order 1 move vertices by ~1e4, as in the BFM.
  """
  rng = np.random.default_rng(seed)
  n = 68 + n_extra
  u = rng.normal(0, 5e4, (n, 3)).astype(np.float32).reshape(-1)
  w_shp = rng.normal(0, 3e-2, (3 * n, 40)).astype(np.float32)
  w_exp = rng.normal(0, 3e-1, (3 * n, 10)).astype(np.float32)
  return mm._build(u, w_shp, w_exp, np.arange(68), 'random model')


def random_stats(seed=0) -> P.ParamStats:
  """Whitening statistics shaped like 3DDFA's: pose ~5e-4 scale, translation ~60 px."""
  mean = np.zeros(62, np.float32)
  std = np.ones(62, np.float32)
  mean[[0, 5, 10]] = 5.5e-4          # f R ~ diag(f, f, f)
  std[:12] = 1e-4
  mean[[3, 7]] = 60.0                # centre of the 120 crop
  std[[3, 7, 11]] = 5.0
  std[12:52] = 2e5 * np.linspace(1, 0.1, 40)
  std[52:] = 2.0 * np.linspace(1, 0.1, 10)
  return P.ParamStats(mean, std, 'random stats')


class FakeStream:
  """An endless iterator of batches with ``get_state``/``set_state`` (JSON-able)."""

  def __init__(self, data, stream, batch_size, with_labels):
    self.data, self.stream, self.batch_size, self.with_labels = data, stream, batch_size, with_labels
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self):
    b = self.data.make_batch(self.stream, self.index, self.batch_size, self.with_labels)
    self.index += 1
    k, n = self.data.shard
    if n > 1:
      m = self.batch_size // n
      b = {key: v[k * m:(k + 1) * m] for key, v in b.items()}
    return b

  def get_state(self):
    return {'index': self.index}

  def set_state(self, state):
    self.index = int(state['index'])


class FakeData:
  """Stands in for ``dasl_jax.data.build_data``'s result (a ``data.protocol.TrainData``):
  ``.model``, ``.param_stats``, ``.convention``, ``.heldout``, ``next()`` and the
  position of its two streams (``train_3d``, ``train_wild``)."""

  dense_model = None
  validation = None
  wild_scheme = wild_scheme18 = None  # labels read as iBUG's points
  has_wild = True

  def __init__(self, seed=0, batch_3d=4, batch_wild=4, image_size=120, n_heldout=8,
               convention='v1', use_assets=True, nan_batch=-1, shard=None):
    kp = assets.asset('bfm', 'keypoints68')
    if use_assets and (kp / 'u_base.txt').exists():
      self.model = mm.load_keypoints68(kp)
      self.param_stats = P.load_param_stats(kp)
    else:
      self.model, self.param_stats = random_model(seed), random_stats(seed)
    self.seed, self.image_size, self.convention = seed, image_size, convention
    self.nan_batch = nan_batch  # 3D batch whose first label is NaN (tests the NaN stop)
    # (index, count) of this process; batches are global, each process takes its rows.
    if shard is None:
      shard = (jax.process_index(), jax.process_count())
    self.shard = (int(shard[0]), int(shard[1]))
    for name, b in (('batch_size_3d', batch_3d), ('batch_size_wild', batch_wild)):
      if b % self.shard[1]:
        raise DaslError(f'--config.data.{name}={b} is not a multiple of the '
                        f'{self.shard[1]} processes')
    self.train_3d = FakeStream(self, 0, batch_3d, True)
    self.train_wild = FakeStream(self, 1, batch_wild, False)
    self.heldout = self.make_batch(2, 0, n_heldout, True)

  def next(self):
    return next(self.train_3d), next(self.train_wild)

  def get_state(self):
    return {'train_3d': self.train_3d.get_state(), 'train_wild': self.train_wild.get_state()}

  def set_state(self, state):
    if set(state) != {'train_3d', 'train_wild'}:
      raise DaslError(f'saved data position has {sorted(state)}, not the streams of fake '
                      'data (was the run started without --config.train.fake_data?)')
    self.train_3d.set_state(state['train_3d'])
    self.train_wild.set_state(state['train_wild'])

  def close(self):
    pass

  def source_rows(self):
    return {}  # endless

  def make_batch(self, stream, index, batch_size, with_labels):
    rng = np.random.default_rng([self.seed, stream, index])
    s = self.image_size
    pw = rng.normal(0, 0.3, (batch_size, 62)).astype(np.float32)
    p = self.param_stats.dewhiten(pw)
    l68 = np.asarray(mm.landmarks2d(self.model.landmark_model(), p, self.convention, s))
    # Keep labels inside the crop even when the random model projects off it.
    l68 = np.clip(l68, 0.0, s - 1.0).astype(np.float32)
    batch = {'image': rng.integers(0, 256, (batch_size, s, s, 3), dtype=np.uint8),
             'points18': lm.select18_np(l68).astype(np.float32),
             'mask18': (rng.random((batch_size, 18)) > 0.1).astype(np.float32)}
    if with_labels:
      if stream == 0 and index == self.nan_batch:
        pw[0, 0] = np.nan
      batch['params'] = pw
      batch['lms68'] = l68
    return batch
