"""The prediction command's input paths, checked before JAX loads (a typo fails fast).

Kept free of heavy imports: ``experiments.predict`` calls :func:`list_inputs`
before it imports :mod:`dasl_jax.inference`.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from dasl_jax.errors import DaslError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.jp2', '.pgm',
                  '.ppm', '.pbm', '.pnm', '.sr', '.ras', '.exr', '.hdr', '.pic')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv')


def list_inputs(paths) -> List[Path]:
  """The files of :func:`scan_inputs` (what a folder holds besides is left out)."""
  return scan_inputs(paths)[0]


def scan_inputs(paths) -> Tuple[List[Path], List[Tuple[Path, str]]]:
  """Images, videos, and folders of them (a folder: its images and videos,
  sorted, not recursive), in the order given, each file once; and what the
  folders hold that is not read, with why (for the run's summary).

  Args:
    paths: one path or a list of them (``--input`` values and positional
      arguments, e.g. a shell-expanded ``images/*.jpg``).
  Returns:
    (files, skipped): skipped lists ``(path, reason)`` for the sub-folders
    ('a folder: not searched') and the files without an image or video suffix
    ('not an image or video (suffix)') of the folders given.
  Raises:
    DaslError: a path that does not exist, a folder without images or videos,
      or two inputs that would write the same outputs
      (same file name stem: ``OUT/NAME.json``).
  """
  if isinstance(paths, (str, Path)):
    paths = [paths]
  if not paths:
    raise DaslError('--input is required (an image, a video or a folder; several allowed)')
  files, seen, skipped = [], set(), []
  for raw in paths:
    path = Path(raw)
    if not path.exists():
      raise DaslError(f'--input {raw}: no such file or folder (inputs are images, videos '
                      'or folders; options start with --)')
    if path.is_file():
      found = [path]
    else:
      found = []
      for p in sorted(path.iterdir()):
        if p.is_dir():
          skipped.append((p, 'a folder: not searched (folders are read one level deep)'))
        elif p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
          found.append(p)
        elif not p.name.startswith('.'):
          skipped.append((p, f'not an image or video ({p.suffix or "no suffix"})'))
      if not found:
        raise DaslError(f'--input {raw}: folder holds no images or videos '
                        f'({", ".join(IMAGE_SUFFIXES[:4])}, ...)')
    for f in found:
      key = f.resolve()
      if key not in seen:
        seen.add(key)
        files.append(f)
  stems = {}
  for f in files:
    if f.stem in stems:
      raise DaslError(f'--input: {stems[f.stem]} and {f} would both write {f.stem}.json '
                      '(same name); rename one or run them separately')
    stems[f.stem] = f
  return files, skipped
