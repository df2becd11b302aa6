"""Shared test helpers: where the real assets are, and skip markers for them.

The real research files are never in the repository; tests that need them use
``requires_assets('bfm', 'u_shp.npy')`` and skip with a clear reason when the
folder (``$DASL_ASSETS``, default ``../shared/assets``) does not have them.
"""
import numpy as np
import pytest

from dasl_jax.assets import asset, assets_dir


def asset_path(*parts):
  """Path of one asset under ``$DASL_ASSETS`` (it may not exist)."""
  return asset(*parts)


def requires_assets(*parts):
  """Skip marker unless ``assets_dir()/parts`` exists."""
  path = asset(*parts)
  return pytest.mark.skipif(
      not path.exists(), reason=f'{path} not found; set DASL_ASSETS')


@pytest.fixture
def assets():
  """The assets folder (tests using it should also carry a ``requires_assets`` marker)."""
  return assets_dir()


@pytest.fixture
def rng():
  """A fresh seeded numpy generator per test."""
  return np.random.default_rng(0)
