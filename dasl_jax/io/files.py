"""Writing small files so that a kill never leaves half of one behind."""
import os
from pathlib import Path


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
