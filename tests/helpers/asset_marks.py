"""Where the real research files are (``$DASL_ASSETS``), and the skip marker for them."""
import pytest

from dasl_jax.assets import asset


def asset_path(*parts):
  """Path of one asset under ``$DASL_ASSETS`` (it may not exist)."""
  return asset(*parts)


def requires_assets(*parts):
  """Skip marker unless ``assets_dir()/parts`` exists."""
  path = asset(*parts)
  return pytest.mark.skipif(
      not path.exists(), reason=f'{path} not found; set DASL_ASSETS')
