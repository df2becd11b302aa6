"""Training and evaluation data: the synthetic face model and dataset, real readers, pipelines."""


def build_data(config, seed):
  """``config.data`` and the run seed -> :class:`dasl_jax.data.pipeline.DataBundle`
  (model, dense_model, param_stats, convention, streams, heldout, describe()).

  Imported lazily so that ``import dasl_jax.data.synthetic`` does not load Grain.
  """
  from dasl_jax.data.pipeline import build_data as _build_data
  return _build_data(config, seed)
