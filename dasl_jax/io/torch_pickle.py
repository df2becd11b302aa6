"""Read PyTorch checkpoints (``.pth``) into numpy arrays without torch.

Two on-disk formats exist:

* legacy (torch < 1.6, and ``_use_new_zipfile_serialization=False``): five
  pickles back to back on one stream -- magic number, protocol version,
  sys_info, the main object (tensors refer to storages through persistent ids
  ``('storage', storage_type, key, location, numel[, view_metadata])``), the
  list of storage keys -- then, for each key, an int64 element count followed
  by the raw little-endian data;
* zip (torch >= 1.6): ``<archive>/data.pkl`` is the main pickle, storage
  ``key`` lives in ``<archive>/data/<key>`` as raw bytes.

In both, tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, ...)`` calls in the pickle, which a custom Unpickler maps
to numpy ``as_strided`` views. Nothing from the file is executed: only a fixed
list of globals is resolved; anything else becomes an inert placeholder.
"""
from __future__ import annotations

import builtins
import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from dasl_jax.errors import DaslError

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

# Storage class name -> numpy dtype (bfloat16 is widened on read).
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32,
    'HalfStorage': np.float16, 'BFloat16Storage': 'bfloat16',
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}
_TORCH_DTYPES = {
    'float64': np.float64, 'float32': np.float32, 'float16': np.float16,
    'bfloat16': 'bfloat16', 'int64': np.int64, 'int32': np.int32,
    'int16': np.int16, 'int8': np.int8, 'uint8': np.uint8, 'bool': np.bool_,
}


class _StorageType:
  """Stands for ``torch.FloatStorage`` etc. in the pickle."""

  def __init__(self, name, dtype):
    self.name, self.dtype = name, dtype


class _Storage:
  """A storage: filled with a flat numpy array once its bytes are read."""

  def __init__(self, key, dtype, numel):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.array = None


class _StorageView:
  """Legacy view of a root storage: elements [offset, offset + size)."""

  def __init__(self, root, offset, size):
    self.root, self.offset, self.size = root, offset, size


class _LazyTensor:
  """A tensor whose storage may not be read yet (legacy format)."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset = storage, offset
    self.size, self.stride = tuple(size), tuple(stride)

  def materialize(self, source):
    storage, offset = self.storage, self.offset
    if isinstance(storage, _StorageView):
      offset += storage.offset
      storage = storage.root
    flat = storage.array
    if flat is None:
      raise DaslError(f'{source}: storage {storage.key} has no data (truncated file?)')
    if any(n == 0 for n in self.size):
      return np.zeros(self.size, flat.dtype)
    if self.size and offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) >= flat.size:
      raise DaslError(f'{source}: tensor reaches past the end of storage {storage.key}')
    if not self.size:
      return np.array(flat[offset])
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=self.size, strides=[s * item for s in self.stride])
    return np.array(view)  # own the memory, drop the strides


class _Placeholder:
  """Any global we do not resolve (argparse.Namespace, custom classes...)."""

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs = args, kwargs

  def __setstate__(self, state):
    self.state = state


def _placeholder_class(module, name):
  return type(f'{module}.{name}', (_Placeholder,), {})


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  # Tensor subclasses (e.g. Parameter in newer torch): the data is func(*args).
  return func(*args)


class _Unpickler(pickle.Unpickler):
  """Resolves torch's rebuild functions and storage types; nothing else runs."""

  def __init__(self, file, storage_loader):
    super().__init__(file, encoding='latin1')
    self._storage_loader = storage_loader

  def find_class(self, module, name):
    if module == 'torch._utils' and name == '_rebuild_tensor_v2':
      return _rebuild_tensor_v2
    if module == 'torch._utils' and name == '_rebuild_tensor':
      return _rebuild_tensor
    if module == 'torch._utils' and name == '_rebuild_parameter':
      return _rebuild_parameter
    if module == 'torch._tensor' and name == '_rebuild_from_type_v2':
      return _rebuild_from_type_v2
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name, _STORAGE_DTYPES[name])
    if module == 'torch' and name in _TORCH_DTYPES:  # torch.float32 etc. (new format)
      return _StorageType(name, _TORCH_DTYPES[name])
    if module == 'collections' and name == 'OrderedDict':
      return collections.OrderedDict
    if module == 'torch' and name == 'Size':
      return tuple
    if module == 'builtins' and name in ('set', 'frozenset', 'list', 'dict', 'tuple',
                                         'slice', 'complex'):
      return getattr(builtins, name)
    return _placeholder_class(module, name)

  def persistent_load(self, pid):
    return self._storage_loader(pid)


def _dtype_of(storage_type):
  if isinstance(storage_type, _StorageType):
    return storage_type.dtype
  raise DaslError(f'unsupported storage type {storage_type!r}')


def _frombuffer(raw, dtype, numel, what):
  if dtype == 'bfloat16':
    u16 = np.frombuffer(raw, '<u2', count=numel)
    return (u16.astype(np.uint32) << 16).view(np.float32)
  dt = np.dtype(dtype).newbyteorder('<')
  if len(raw) < numel * dt.itemsize:
    raise DaslError(f'{what}: storage has {len(raw)} bytes, needs {numel * dt.itemsize} '
                    '(truncated file?)')
  return np.frombuffer(raw, dt, count=numel).astype(np.dtype(dtype))


def _materialize(obj, source):
  """Replace lazy tensors in nested dicts/lists/tuples by numpy arrays."""
  if isinstance(obj, _LazyTensor):
    return obj.materialize(source)
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v, source)) for k, v in obj.items()) \
        if isinstance(obj, collections.OrderedDict) else \
        {k: _materialize(v, source) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_materialize(v, source) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_materialize(v, source) for v in obj)
  return obj


def _load_legacy(f, source):
  magic = pickle.load(f)
  if magic != LEGACY_MAGIC:
    raise DaslError(f'{source}: not a PyTorch checkpoint (bad magic number)')
  protocol = pickle.load(f)
  if protocol != LEGACY_PROTOCOL:
    raise DaslError(f'{source}: unsupported legacy protocol version {protocol}')
  sys_info = pickle.load(f)
  if isinstance(sys_info, dict) and not sys_info.get('little_endian', True):
    raise DaslError(f'{source}: big-endian checkpoints are not supported')
  storages = {}

  def load_storage(pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != 'storage':
      raise DaslError(f'{source}: unknown persistent id {pid!r}')
    storage_type, key, _location, numel = pid[1:5]
    view_metadata = pid[5] if len(pid) > 5 else None
    if key not in storages:
      storages[key] = _Storage(key, _dtype_of(storage_type), numel)
    root = storages[key]
    if view_metadata is not None:
      _view_key, offset, view_size = view_metadata
      return _StorageView(root, offset, view_size)
    return root

  obj = _Unpickler(f, load_storage).load()
  keys = pickle.load(f, encoding='latin1')
  for key in keys:
    if key not in storages:
      raise DaslError(f'{source}: storage {key} listed but never referenced')
    st = storages[key]
    head = f.read(8)
    if len(head) < 8:
      raise DaslError(f'{source}: file ends before storage {key} (truncated file?)')
    numel = struct.unpack('<q', head)[0]
    itemsize = 2 if st.dtype == 'bfloat16' else np.dtype(st.dtype).itemsize
    raw = f.read(numel * itemsize)
    if len(raw) < numel * itemsize:
      raise DaslError(f'{source}: storage {key} has {len(raw)} of {numel * itemsize} bytes '
                      '(truncated file?)')
    st.array = _frombuffer(raw, st.dtype, numel, f'{source}: storage {key}')
  return _materialize(obj, source)


def _load_zip(path, source):
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
    if not pkls:
      raise DaslError(f'{source}: zip file without data.pkl (not a PyTorch checkpoint)')
    prefix = pkls[0][:-len('data.pkl')]
    if f'{prefix}byteorder' in names and zf.read(f'{prefix}byteorder').strip() != b'little':
      raise DaslError(f'{source}: big-endian checkpoints are not supported')
    storages = {}

    def load_storage(pid):
      if not isinstance(pid, tuple) or not pid or pid[0] != 'storage':
        raise DaslError(f'{source}: unknown persistent id {pid!r}')
      storage_type, key, _location, numel = pid[1:5]
      if key not in storages:
        name = f'{prefix}data/{key}'
        if name not in names:
          raise DaslError(f'{source}: storage {name} missing from the archive')
        st = _Storage(key, _dtype_of(storage_type), numel)
        st.array = _frombuffer(zf.read(name), st.dtype, numel, f'{source}: {name}')
        storages[key] = st
      return storages[key]

    with zf.open(pkls[0]) as f:
      obj = _Unpickler(io.BytesIO(f.read()), load_storage).load()
  return _materialize(obj, source)


def load(path):
  """Load a ``.pth`` file (legacy or zip) -> the pickled object, tensors as numpy.

  Raises DaslError naming the file when it is missing, truncated or corrupt.
  """
  path = Path(path)
  if not path.exists():
    raise DaslError(f'{path}: PyTorch checkpoint not found')
  source = str(path)
  try:
    if zipfile.is_zipfile(path):
      return _load_zip(path, source)
    with open(path, 'rb') as f:
      return _load_legacy(f, source)
  except DaslError:
    raise
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, KeyError,
          TypeError, AttributeError, IndexError, struct.error, OSError) as e:
    raise DaslError(f'{source}: corrupt or truncated PyTorch checkpoint '
                    f'({type(e).__name__}: {e})') from None


def load_state_dict(path):
  """Load a checkpoint's state dict as ``{name: np.ndarray}``.

  Unwraps ``{'state_dict': ...}`` (and ``res_state_dict`` (2DASL),
  ``model_state_dict``, ``model``) and strips DataParallel's ``module.`` prefixes.
  """
  return state_dict_of(load(path), path)


def state_dict_of(obj, path):
  """The state dict in a loaded checkpoint object (see :func:`load_state_dict`)."""
  if isinstance(obj, dict):
    for k in ('state_dict', 'res_state_dict', 'model_state_dict', 'model'):
      if k in obj and isinstance(obj[k], dict):
        obj = obj[k]
        break
  if not isinstance(obj, dict):
    raise DaslError(f'{path}: expected a state dict, got {type(obj).__name__}')
  out = {}
  for k, v in obj.items():
    if not isinstance(v, np.ndarray):
      continue
    name = k[len('module.'):] if k.startswith('module.') else k
    out[name] = v
  if not out:
    raise DaslError(f'{path}: no tensors in the state dict')
  return out
