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


_VARS = ('${DASL_ASSETS}', '$DASL_ASSETS')


def expand(value: str) -> str:
  """``$DASL_ASSETS`` / ``${DASL_ASSETS}`` in a path -> :func:`assets_dir` (set or not),
  so flagfiles can name assets wherever a user keeps them."""
  for v in _VARS:
    value = value.replace(v, str(assets_dir()))
  return value


def expand_config(config):
  """A copy of a ConfigDict with :func:`expand` applied to every string field."""
  import ml_collections
  out = ml_collections.ConfigDict(config.to_dict())

  def walk(c):
    for k, v in c.items():
      if isinstance(v, ml_collections.ConfigDict):
        walk(v)
      elif isinstance(v, str) and 'DASL_ASSETS' in v:
        c[k] = expand(v)
  walk(out)
  return out
