"""Helpers for the training tests: a tiny regressor and a step built around it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dasl_jax.training.config import default_config


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
