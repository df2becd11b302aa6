"""The Grain pipeline: epochs, determinism, sharding, bit-exact resume, build_data."""
import json

import numpy as np
import pytest

from dasl_jax.data import config as C
from dasl_jax.data import pipeline as PL
from tests.helpers import dataset_files

N = 24


def _examples(n=N, with_3d=True, seed=0):
  """Toy examples whose params[0] / points18[0, 0] carry their id."""
  rng = np.random.default_rng(seed)
  stats = dataset_files.toy_stats()
  out = []
  for i in range(n):
    ex = {'image': rng.integers(0, 256, (120, 120, 3), dtype=np.uint8),
          'points18': rng.uniform(30, 90, (18, 2)).astype(np.float32),
          'mask18': np.ones(18, np.float32)}
    ex['points18'][0, 0] = i
    if with_3d:
      p = dataset_files.toy_params(1, seed=i)[0]
      ex['params'] = stats.whiten(p).astype(np.float32)
      ex['params'][0] = i
      ex['lms68'] = dataset_files.lms68_v1(dataset_files.toy_model(), p).astype(np.float32)
    out.append(ex)
  return out


def _cfg(augment=True, threads=2, workers=0):
  c = C.data_config()
  c.batch_size_3d = 8
  c.batch_size_wild = 6
  c.num_threads = threads
  c.prefetch = 16
  c.num_workers = workers
  c.augment.enabled = augment
  return c


def _streams(seed=0, augment=True, threads=2, workers=0, shard=(0, 1)):
  return PL.make_streams(_cfg(augment, threads, workers), seed, _examples(),
                         _examples(18, with_3d=False, seed=1), dataset_files.toy_model(),
                         dataset_files.toy_stats(), shard=shard)


def _ids(batch):
  return batch['params'][:, 0].astype(int).tolist()


def test_epochs_cover_every_example_once_and_reshuffle():
  s = _streams(augment=False)
  ids = [i for _ in range(6) for i in _ids(s.next()[0])]
  e1, e2 = ids[:N], ids[N:]
  assert sorted(e1) == list(range(N)) and sorted(e2) == list(range(N))
  assert e1 != list(range(N)) and e1 != e2  # shuffled, reshuffled each epoch
  s.close()


def test_batch_format():
  s = _streams()
  b3, bw = s.next()
  assert b3['image'].dtype == np.uint8 and b3['image'].shape == (8, 120, 120, 3)
  assert b3['params'].shape == (8, 62) and b3['lms68'].shape == (8, 68, 2)
  assert b3['points18'].shape == (8, 18, 2) and b3['mask18'].shape == (8, 18)
  assert set(bw) == {'image', 'points18', 'mask18'} and bw['image'].shape == (6, 120, 120, 3)
  assert all(v.dtype == np.float32 for k, v in b3.items() if k != 'image')
  s.close()


def test_seeds():
  a, b, c = _streams(seed=3), _streams(seed=3), _streams(seed=4)
  for _ in range(2):
    xa, xb, xc = a.next()[0], b.next()[0], c.next()[0]
    for k in xa:
      np.testing.assert_array_equal(xa[k], xb[k])
  assert not np.array_equal(xa['image'], xc['image'])
  for s in (a, b, c):
    s.close()


def test_sharding_splits_hosts():
  got = []
  for host in (0, 1):
    s = _streams(augment=False, shard=(host, 2))
    got.append({i for _ in range(3) for i in _ids(s.next()[0])})  # 3 x 4 = 12 per host
    s.close()
  assert got[0].isdisjoint(got[1]) and got[0] | got[1] == set(range(N))


def test_hosts_rows_make_the_one_host_global_batch():
  """Batch sizes are global: host k of 2 yields rows k*B/2 .. (k+1)*B/2 of the batch one
  host yields (augmentation included), across epoch boundaries and after a resume.

  A training checkpoint holds process 0's position only (Orbax writes JSON items
  from the primary process) and every process restores it: right because a
  position names no shard (the shard is in how the stream is built), so both
  hosts' positions are equal, and host 1 resumed from host 0's saved position
  goes on with its own rows."""
  one = _streams(seed=4, shard=(0, 1))
  two = [_streams(seed=4, shard=(k, 2)) for k in (0, 1)]
  for step in range(5):
    if step == 3:  # resume both hosts from host 0's saved position
      states = [json.loads(json.dumps(s.get_state())) for s in two]
      assert states[0] == states[1]
      for s in two:
        s.close()
      two = [_streams(seed=4, shard=(k, 2)) for k in (0, 1)]
      for s in two:
        s.set_state(states[0])
    whole = one.next()
    parts = [s.next() for s in two]
    for j in range(2):  # the 3D and the wild stream
      assert parts[0][j]['image'].shape[0] * 2 == whole[j]['image'].shape[0]
      for k in whole[j]:
        np.testing.assert_array_equal(
            np.concatenate([parts[0][j][k], parts[1][j][k]]), whole[j][k])
  for s in (one, *two):
    s.close()
  with pytest.raises(Exception, match='not a multiple of the 3 processes'):
    _streams(shard=(0, 3))  # wild batch 6 splits, 3D batch 8 does not


def _same(bs1, bs2):
  for (a3, aw), (b3, bw) in zip(bs1, bs2):
    for a, b in ((a3, b3), (aw, bw)):
      assert set(a) == set(b)
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize('threads', [1, 3])
def test_resume_is_bit_exact(threads):
  s = _streams(seed=11, threads=threads)
  for _ in range(3):
    s.next()
  state = s.get_state()
  blob = json.dumps(state)  # JSON-able as it is
  as_bytes = s.get_state_bytes()
  later = [s.next() for _ in range(4)]
  s.close()
  fresh = _streams(seed=11, threads=threads)
  fresh.set_state(json.loads(blob))
  _same(later, [fresh.next() for _ in range(4)])
  fresh.close()
  again = _streams(seed=11, threads=threads)
  again.set_state(as_bytes)
  _same(later, [again.next() for _ in range(4)])
  again.close()


def test_resume_with_worker_processes():
  """One worker process (they are slow to start: each imports JAX and Grain)."""
  cfg = _cfg(workers=1)
  src = _examples(12, with_3d=False, seed=1)

  def stream(workers):
    return PL.Stream(src, 4, 5, PL.ExampleMap(PL.KEYS_WILD, 5, cfg.augment), num_threads=2,
                     prefetch=8, num_workers=workers, shard=(0, 1))
  s = stream(1)
  for _ in range(2):
    s.next()
  state = json.loads(json.dumps(s.get_state()))
  later = [s.next() for _ in range(3)]
  s.close()
  fresh = stream(1)
  fresh.set_state(state)
  got = [fresh.next() for _ in range(3)]
  fresh.close()
  plain = stream(0)  # threads only: the same batches
  for _ in range(2):
    plain.next()
  ref = [plain.next() for _ in range(3)]
  plain.close()
  for a, b, c in zip(later, got, ref):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
      np.testing.assert_array_equal(a[k], c[k])


def test_state_of_other_run_is_refused():
  s = _streams()
  from dasl_jax.errors import DaslError
  with pytest.raises(DaslError, match='streams'):
    s.set_state({'3d': {'next_index': 0}})
  s.close()


def _synthetic_cfg(size=16, threads=2):
  c = C.data_config()
  c.synthetic_size_3d, c.synthetic_size_wild, c.synthetic_size_heldout = size, size, 4
  c.synthetic_stats_samples = 200
  c.batch_size_3d = c.batch_size_wild = 4
  c.num_threads = threads
  return c


def test_build_data_default_synthetic():
  c = _synthetic_cfg()
  from dasl_jax.data import build_data
  bundle = build_data(c, seed=0)
  assert 'SyntheticFaces' in bundle.describe() and '\n' not in bundle.describe()
  assert bundle.model.u.shape == (204,) and bundle.convention == 'v1'
  assert set(bundle.heldout) >= {'image', 'points18', 'mask18', 'params', 'lms68'}
  assert bundle.heldout['lms68'].shape == (4, 68, 2)
  b3, bw = bundle.streams.next()
  assert b3['params'].shape == (4, 62) and bw['image'].shape == (4, 120, 120, 3)
  bundle.streams.close()


def test_build_data_synthetic_cache(tmp_path):
  """--config.data.synthetic_cache renders each synthetic set once: the second build
  reads the .npz files and gives the same held-out set and batches."""
  from dasl_jax.data import build_data

  def build():
    c = _synthetic_cfg(size=8, threads=1)
    c.synthetic_cache = str(tmp_path / 'cache')
    return build_data(c, seed=0)

  first = build()
  files = sorted(p.name for p in (tmp_path / 'cache').glob('*.npz'))
  assert len(files) == 3 and {f.split('_')[1] for f in files} == {'3d', 'wild', 'heldout'}
  a = first.streams.next()
  first.streams.close()
  mtimes = [p.stat().st_mtime_ns for p in sorted((tmp_path / 'cache').glob('*.npz'))]
  second = build()
  assert [p.stat().st_mtime_ns for p in sorted((tmp_path / 'cache').glob('*.npz'))] == mtimes
  assert second.sources['3d']._cache is not None
  b = second.streams.next()
  second.streams.close()
  for k in a[0]:
    assert a[0][k].tobytes() == b[0][k].tobytes()
  assert first.heldout['image'].tobytes() == second.heldout['image'].tobytes()


def test_example_map_sets_opencv_threads_once_per_process(monkeypatch):
  """The map sets OpenCV's pool size where it runs (``data.opencv_threads``; -1 leaves it)."""
  import cv2
  calls = []
  monkeypatch.setattr(cv2, 'setNumThreads', lambda n: calls.append(n))
  ex = {'image': np.zeros((8, 8, 3), np.uint8), 'points18': np.zeros((18, 2)),
        'mask18': np.ones(18)}
  m = PL.ExampleMap(PL.KEYS_WILD, 5, None, opencv_threads=1)
  for i in range(3):
    m(i, ex)
  assert calls == [1]  # once in this process, not per example
  m._threads_set_in = -1  # as if unpickled in a worker process
  m(3, ex)
  assert calls == [1, 1]
  PL.ExampleMap(PL.KEYS_WILD, 5, None, opencv_threads=-1)(0, ex)
  assert calls == [1, 1]


def test_opencv_threads_flag_is_checked():
  from dasl_jax.errors import DaslError
  from dasl_jax.training.config import check_config, default_config
  cfg = default_config()
  cfg.data.opencv_threads = -2
  with pytest.raises(DaslError, match='opencv_threads=-2'):
    check_config(cfg)
