"""PyTorch's checkpoint formats (legacy and zip) written by hand, without torch,
following torch/serialization.py: ``FakeStorage`` / ``FakeTensor`` objects in a
pickle, ``write_legacy`` and ``write_zip``."""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

from dasl_jax.io import torch_pickle


class FakeStorage:
  def __init__(self, key, data):
    self.key, self.data = key, np.ascontiguousarray(data)


class FakeTensor:
  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

  def __reduce__(self):
    return (sys.modules['torch._utils']._rebuild_tensor_v2, self.args)


def _fake_torch_modules(monkeypatch):
  """Modules named torch / torch._utils so pickle records the right globals."""
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*args):
    raise AssertionError('never called while writing')

  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in ('FloatStorage', 'LongStorage'):
    cls = type(name, (), {'__module__': 'torch'})
    setattr(torch, name, cls)
  torch._utils = utils
  monkeypatch.setitem(sys.modules, 'torch', torch)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils)
  return torch


def _storage_type(torch, data):
  return torch.FloatStorage if data.dtype == np.float32 else torch.LongStorage


def write_legacy(path, obj, storages, monkeypatch):
  torch = _fake_torch_modules(monkeypatch)

  class P(pickle.Pickler):
    def persistent_id(self, o):
      if isinstance(o, FakeStorage):
        return ('storage', _storage_type(torch, o.data), o.key, 'cpu', o.data.size, None)
      return None

  with open(path, 'wb') as f:
    pickle.dump(torch_pickle.LEGACY_MAGIC, f, protocol=2)
    pickle.dump(torch_pickle.LEGACY_PROTOCOL, f, protocol=2)
    pickle.dump({'protocol_version': 1001, 'little_endian': True,
                 'type_sizes': {'short': 2, 'int': 4, 'long': 4}}, f, protocol=2)
    P(f, protocol=2).dump(obj)
    keys = [s.key for s in storages]
    pickle.dump(keys, f, protocol=2)
    for s in storages:
      f.write(struct.pack('<q', s.data.size))
      f.write(s.data.astype(s.data.dtype.newbyteorder('<')).tobytes())


def write_zip(path, obj, storages, monkeypatch):
  torch = _fake_torch_modules(monkeypatch)

  class P(pickle.Pickler):
    def persistent_id(self, o):
      if isinstance(o, FakeStorage):
        return ('storage', _storage_type(torch, o.data), o.key, 'cpu', o.data.size)
      return None

  buf = io.BytesIO()
  P(buf, protocol=2).dump(obj)
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', buf.getvalue())
    z.writestr('archive/version', '3\n')
    for s in storages:
      z.writestr(f'archive/data/{s.key}', s.data.tobytes())
