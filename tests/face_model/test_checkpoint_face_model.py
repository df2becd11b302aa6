"""Which face model a checkpoint is read with (``face_model.bfm.face_models``): the
one its training labels were drawn from."""
import types

import numpy as np

from dasl_jax.face_model import bfm
from dasl_jax.training.fake_data import FakeData
from tests.helpers.asset_marks import requires_assets


def test_kind_from_the_runs_flags():
  assert bfm.checkpoint_face_model(None) == 'bfm'  # converted 3DDFA / 3DDFA_V2 models
  assert bfm.checkpoint_face_model({'data': {'source_3d': 'synthetic'}}) == 'synthetic'
  assert bfm.checkpoint_face_model({'data': {'source_3d': 'teacher'}}) == 'bfm'
  assert bfm.checkpoint_face_model({'data.source_3d': 'synthetic'}) == 'synthetic'
  # A fake-data run records the default source_3d ('synthetic') but never read it.
  fake = {'data': {'source_3d': 'synthetic'}, 'train': {'fake_data': True}}
  assert bfm.checkpoint_face_model(fake) == 'bfm'
  assert bfm.checkpoint_face_model({'data.source_3d': 'synthetic',
                                    'train.fake_data': True}) == 'bfm'
  off = {'data': {'source_3d': 'synthetic'}, 'train': {'fake_data': False}}
  assert bfm.checkpoint_face_model(off) == 'synthetic'


@requires_assets('bfm', 'keypoints68')
def test_fake_data_checkpoint_reads_with_the_model_its_labels_came_from():
  """Before: a fake-data run was read with the synthetic model, and the notebook
  printed NMEs near 680,000% for it."""
  labels = FakeData(seed=0, batch_3d=1, batch_wild=1).model
  flags = {'data': {'source_3d': 'synthetic'}, 'train': {'fake_data': True}}
  models = bfm.face_models(types.SimpleNamespace(flags=flags))
  assert models.kind == 'bfm'
  got = models.landmarks
  for field in ('u', 'w_shp', 'w_exp'):
    a, b = np.asarray(getattr(got, field)), np.asarray(getattr(labels, field))
    assert a.shape == b.shape, field
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max(), err_msg=field)
