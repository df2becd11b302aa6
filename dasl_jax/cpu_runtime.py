"""Host-memory tuning for XLA:CPU: stop the per-step page faults of its temp buffers.

XLA:CPU allocates each execution's temporaries as one large block (about 555 MB
for a MobileNetV1 x0.5 training step at batch 32) with ``malloc`` and frees it
afterwards. glibc serves blocks that large with ``mmap`` and returns them with
``munmap``, so every step faults the whole block in again, page by page
(~142,000 minor faults and ~45% of the process's CPU time as system time on
the project's 2-core machine; see benchmarks/README.md). Worker threads use
their own arenas, which fall back to ``mmap`` for large blocks even when
``M_MMAP_MAX`` is 0, so the arena count must be 1 as well.

:func:`tune_malloc` sets, through ``mallopt``: one arena, no ``mmap`` for large
blocks, and no trimming (``M_TRIM_THRESHOLD`` -1, glibc's "never"), so freed
temporaries stay in the heap and the next step reuses them. (The largest
positive threshold, 2 GiB, is not enough: a batch-128 training step's block
is larger, was trimmed after every step and faulted back in, ~460,000 faults
and half the speed.) Call it at the start of a command, before JAX
creates its thread pool. Peak memory is unchanged; it is just not returned to
the OS between steps. The same effect from outside the process:
``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776``, or
jemalloc (``LD_PRELOAD=libjemalloc.so.2
MALLOC_CONF=oversize_threshold:0,dirty_decay_ms:60000,muzzy_decay_ms:60000``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8

_done = None


# jaxlib plugins of accelerator backends and the device nodes they drive.
_ACCELERATORS = (
    (('jax_cuda12_plugin', 'jax_cuda13_plugin'), ('/dev/nvidiactl',)),
    (('jax_rocm60_plugin', 'jax_rocm7_plugin'), ('/dev/kfd',)),
    (('libtpu',), ('/dev/accel0', '/dev/vfio/0')),
)


def accelerator_expected() -> bool:
  """Whether JAX will run on an accelerator, decided without starting JAX (so before
  its threads exist): ``JAX_PLATFORMS`` when set, else an accelerator plugin is
  installed and its device node exists."""
  import importlib.util
  import os
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return any(p.strip() not in ('cpu', '') for p in platforms.split(','))
  for modules, nodes in _ACCELERATORS:
    try:
      installed = any(importlib.util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
      installed = False
    if installed and any(os.path.exists(n) for n in nodes):
      return True
  return False


def tune_malloc(top_pad_bytes: int = 64 << 20) -> bool:
  """Keep large freed blocks in the heap (glibc only). Returns True when applied.

  Idempotent; a no-op (False) off Linux/glibc and when JAX will run on an
  accelerator (:func:`accelerator_expected`: XLA:CPU's temporaries are then not
  the hot path, and one malloc arena would only slow the host's data threads).
  """
  global _done
  if _done is not None:
    return _done
  _done = False
  if not sys.platform.startswith('linux') or accelerator_expected():
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  ok = all(mallopt(p, v) == 1 for p, v in (
      (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1),
      (M_TOP_PAD, top_pad_bytes)))
  _done = ok
  return ok


HOST_DEVICE_FLAG = '--xla_force_host_platform_device_count'


def split_host_devices(count: int = 0) -> int:
  """Expose the CPU as ``count`` XLA devices (0: one per core) for data parallelism.

  One jitted MobileNet forward at batch 128 already keeps both cores of the
  project's machine busy (CPU/wall 1.92), yet the same batch sharded over two
  host devices ran 0 to 11% faster in five quiet runs
  (probe infer_split, benchmarks/README.md: 958 -> 1061 img/s at best;
  benchmarks.inference: 1108 -> 1104 at worst), so commands leave it off by
  default. Must run before JAX initialises its backend (the start of a
  command); does nothing when ``XLA_FLAGS`` already sets a device count, off
  CPU-only hosts, or when the backend is already up.

  Returns:
    the device count asked for (1 when nothing was changed).
  """
  import os
  from jax._src import xla_bridge
  count = int(count) or (os.cpu_count() or 1)
  flags = os.environ.get('XLA_FLAGS', '')
  if count <= 1 or HOST_DEVICE_FLAG in flags or xla_bridge.backends_are_initialized():
    return 1
  if os.environ.get('JAX_PLATFORMS', 'cpu') not in ('cpu', ''):
    return 1
  os.environ['XLA_FLAGS'] = f'{flags} {HOST_DEVICE_FLAG}={count}'.strip()
  return count
