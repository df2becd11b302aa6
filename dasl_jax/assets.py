"""Where the real research files live (never in this repository).

``DASL_ASSETS`` names a folder with the layout of ``../shared/assets`` (see its
README): ``bfm/``, ``pretrained/``, ``aflw2000-3d/``, ``aflw-wild/``, ``images/``.
"""
import os
from pathlib import Path

_DEFAULT = Path(__file__).resolve().parent.parent.parent / 'shared' / 'assets'


def assets_dir() -> Path:
  """The assets folder: ``$DASL_ASSETS`` or ``../shared/assets`` from the repo."""
  return Path(os.environ.get('DASL_ASSETS', str(_DEFAULT))).expanduser()


def asset(*parts) -> Path:
  """Path of one asset (which may not exist: callers check)."""
  return assets_dir().joinpath(*parts)
