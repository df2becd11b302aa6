"""Helpers for the training tests: a tiny regressor and a step built around it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dasl_jax.training.config import default_config


def numpy_variables(module, x, seed=0):
  """Variables for ``module.init(key, x)``, drawn in numpy as Flax's defaults would
  draw them (kernels LeCun-normal: variance 1 / fan-in; biases and BN shifts 0, BN
  scales 1, running means 0 and variances 1), for tests where any such weights serve.
  ``module.init`` compiles the initialisers' random-number code: 10 to 30 s per
  network on an AVX2 CPU, where these take milliseconds."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      fan_in = int(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(0, 1 / np.sqrt(fan_in), s.shape), s.dtype)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


class TinyRegressor(nn.Module):
  """(B, 120, 120, C) -> (B, 62): one strided conv, batch norm, pooling, Dense."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (4, 4), (4, 4), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    return nn.Dense(62, kernel_init=nn.initializers.normal(0.01))(jnp.mean(x, axis=(1, 2)))


def tiny_config(**loss):
  c = default_config()
  c.critic.encoder_widths = (4, 8)
  c.critic.latent_dim = 16
  c.critic.hidden = (16, 16)
  c.optim.critic_every = 2
  c.optim.lr = 1e-3
  for k, v in loss.items():
    c.loss[k] = v
  return c


def build(config, data, num_steps=10, mesh=None):
  """(CompiledStep, initial state, consts, base key) for the tiny regressor, made by
  the training factories (``loop.build_step``, ``loop.init_state``)."""
  from dasl_jax.training import loop
  config = ml_collections.ConfigDict(config.to_dict())
  config.train.num_steps = num_steps
  config.model.in_channels = 4
  config.data.convention = data.convention
  bundle = loop.build_step(config, data, module=TinyRegressor(), mesh=mesh)
  state, consts, _ = loop.init_state(config, bundle, data)
  key = bundle.compiled.put_replicated(jax.random.PRNGKey(0))
  return bundle.compiled, state, consts, key
