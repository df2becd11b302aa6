"""Landmark list files, ``name,x1,y1,...,xK,yK`` a line: the one reader of the format."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dasl_jax.errors import DaslError


def is_number(s):
  try:
    float(s)
    return True
  except ValueError:
    return False


def read_landmark_file(path, expected_k=None, what=''):
  """A landmark list: ``name,x1,y1,...,xK,yK`` a line (commas, semicolons or
  whitespace); the one reader of this format (3DDFA's ``detect_testData_1998.txt``,
  FAN-style lists, plain CSV, ``predict --landmarks``).

  A first line that is not numeric is taken as a header; lines starting with
  ``#`` are comments. K (68, 21 or 18) is detected from the first row and must
  be the same on every row. A name may appear on several lines (several faces).

  Args:
    expected_k: refuse other point counts; what: the flag to name in errors.
  Returns:
    names (list of str), points float32 (N, K, 2).
  """
  path = Path(path)
  where = f'{what} {path}' if what else str(path)
  if not path.exists():
    raise DaslError(f'{where}: landmark file not found')
  names, rows = [], []
  k = None
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line or line.startswith('#'):
        continue
      fields = [s for s in line.replace(',', ' ').replace(';', ' ').split() if s]
      if len(fields) > 1 and not all(is_number(s) for s in fields[1:]):
        if not names and lineno == 1:
          continue  # header
        raise DaslError(f'{where}: line {lineno}: non-numeric coordinates')
      n = len(fields) - 1
      if n % 2 or n // 2 not in (68, 21, 18):
        raise DaslError(f'{where}: line {lineno}: {n} numbers after the name; expected '
                        '2 x 68, 2 x 21 or 2 x 18 (x1,y1,...)')
      if k is None:
        k = n // 2
        if expected_k is not None and k != expected_k:
          raise DaslError(f'{where}: {k} points per line, expected {expected_k}')
      elif n // 2 != k:
        raise DaslError(f'{where}: line {lineno}: {n // 2} points, earlier lines have {k}')
      names.append(fields[0])
      rows.append(np.asarray(fields[1:], np.float32).reshape(k, 2))
  if not names:
    raise DaslError(f'{where}: no landmark lines')
  return names, np.stack(rows)
