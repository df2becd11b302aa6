"""The one exception type users see.

Commands catch :class:`DaslError` at the top, print its message on one line and
exit non-zero, so a bad file or flag never shows a traceback from inside JAX.
"""
import sys


class DaslError(ValueError):
  """A problem with user input: a file, a flag or an array. The message names it."""


def check_shape(array, expected, what):
  """Raise DaslError unless ``array.shape`` matches ``expected`` (None = any size).

  Args:
    array: anything with ``.shape``.
    expected: tuple of ints or None.
    what: a phrase naming the array and where it came from (file and key).
  """
  shape = tuple(getattr(array, 'shape', ()))
  ok = len(shape) == len(expected) and all(
      e is None or e == s for e, s in zip(expected, shape))
  if not ok:
    want = '(' + ', '.join('N' if e is None else str(e) for e in expected) + ')'
    raise DaslError(f'{what}: expected shape {want}, got {shape}')
  return array


def warn(msg):
  """A one-line warning on stderr (``warning: ...``)."""
  print(f'warning: {msg}', file=sys.stderr)


class BadInput(DaslError):
  """A mistake in what the user gave that stops a run over many inputs (a ``--boxes``
  entry outside its image, a video whose frames change size), where an input file
  that cannot be read is only skipped with a warning."""
