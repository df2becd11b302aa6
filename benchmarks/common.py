"""Shared helpers for benchmarks: machine and version info, timing, JSON output.

Every benchmark's JSON carries ``machine``, ``versions``, ``command`` and
``timestamp`` (:func:`header`), so numbers can be compared only where they were
measured the same way.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

DEFAULT_PACKAGES = ('jax', 'jaxlib', 'flax', 'numpy', 'optax', 'orbax-checkpoint', 'torch',
                    'onnx', 'onnxruntime')


def cpu_model() -> str:
  """The CPU's model name (from /proc/cpuinfo on Linux, else platform)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.lower().startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine() -> Dict[str, object]:
  """Platform, CPU count (usable and total), CPU model, load, Python, JAX backend/devices."""
  info = {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
          'cpu_model': cpu_model(), 'python': platform.python_version()}
  try:
    info['usable_cpus'] = len(os.sched_getaffinity(0))
  except AttributeError:
    pass
  try:  # a busy shared machine explains noisy numbers
    info['load_average_1_5_15min'] = [round(x, 2) for x in os.getloadavg()]
  except OSError:
    pass
  try:
    import jax
    info['jax_backend'] = jax.default_backend()
    info['jax_devices'] = [str(d) for d in jax.devices()]
  except Exception:  # benchmarks without jax still get a header
    pass
  return info


def versions(packages: Sequence[str] = DEFAULT_PACKAGES) -> Dict[str, str]:
  """Installed versions of ``packages`` (absent ones are left out)."""
  out = {}
  for p in packages:
    try:
      out[p] = importlib.metadata.version(p)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def command() -> str:
  """The command line as the user typed it (``python -m module args``)."""
  main = sys.modules.get('__main__')
  spec = getattr(main, '__spec__', None)
  if spec is not None and spec.name:
    argv = ['python', '-m', spec.name] + sys.argv[1:]
  else:
    argv = ['python'] + sys.argv
  return ' '.join(shlex.quote(a) for a in argv)


def header(packages: Sequence[str] = DEFAULT_PACKAGES) -> Dict[str, object]:
  """``machine``, ``versions``, ``command``, ``timestamp`` (UTC, ISO 8601)."""
  return {'machine': machine(), 'versions': versions(packages), 'command': command(),
          'timestamp': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds')}


def time_fn(fn: Callable[[], object], repeats: int = 10, warmup: int = 2,
            block: Optional[Callable[[object], object]] = None) -> Dict[str, float]:
  """Time ``fn()`` after ``warmup`` calls: median, min and all seconds.

  ``block`` is applied to the result before stopping the clock (e.g.
  ``jax.block_until_ready``) so asynchronous dispatch is not mistaken for speed.
  """
  block = block or (lambda r: r)
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t0)
  return {'median_s': float(np.median(times)), 'min_s': float(np.min(times)),
          'repeats': repeats, 'times_s': [float(t) for t in times]}


def write_json(result: dict, path) -> None:
  """Write ``result`` (with :func:`header` merged in first) as indented JSON."""
  out = dict(header())
  out.update(result)
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  Path(path).write_text(json.dumps(out, indent=1) + '\n')


def finish(measure: Callable[[], dict], json_path: str = '') -> dict:
  """A benchmark command's tail: run ``measure()``, turn a DaslError into one
  line and exit 2, write the JSON (machine, versions, command first) if asked."""
  import sys
  from dasl_jax.errors import DaslError
  try:
    res = measure()
  except DaslError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if json_path:
    write_json(res, json_path)
    print(f'wrote {json_path}')
  return res
