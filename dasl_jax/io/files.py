"""Small files of a work directory: written whole, and what JSON can hold."""
import math
import os
from pathlib import Path

import numpy as np


def write_text_atomic(path, text: str) -> None:
  """Write ``text`` to ``path`` through a temporary file in the same folder and
  ``os.replace``: a process killed at any moment (SIGKILL, a node lost) leaves
  either the old file or the new one, never a truncated one that a later resume
  or ``checkpoint.restore`` would fail to parse."""
  path = Path(path)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  try:
    with open(tmp, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def jsonable(x):
  """``x`` made of what ``json.dumps`` writes as valid JSON (the one converter for
  loader states, metric records and reports).

  Dicts (keys as strings), lists and tuples are converted item by item; numpy
  scalars and arrays become Python numbers and lists; bytes (Grain's states hold
  some) become latin-1 text, which maps every byte to one character and back;
  non-finite floats become their text (``'nan'``, ``'inf'``), since JSON has no
  such numbers; anything else that is not a string, number, bool or None becomes
  its ``str``.
  """
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (np.ndarray, np.generic)):
    return jsonable(x.tolist())
  if isinstance(x, bytes):
    return x.decode('latin1')
  if isinstance(x, float):
    return x if math.isfinite(x) else str(x)
  if x is None or isinstance(x, (str, int, bool)):
    return x
  if hasattr(x, 'item'):  # a device scalar (jax.Array)
    return jsonable(np.asarray(x).tolist())
  return str(x)
