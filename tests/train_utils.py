"""Helpers for the training tests: a tiny regressor and a step built around it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dasl_jax.config import default_config
from dasl_jax.models.critic import SelfCritic
from dasl_jax.training import optimizers
from dasl_jax.training import state as state_lib
from dasl_jax.training import step as step_lib


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
  """(CompiledStep, initial state, consts, base key) for the tiny regressor."""
  module = TinyRegressor()
  critic = SelfCritic(tuple(config.critic.encoder_widths), config.critic.latent_dim,
                      tuple(config.critic.hidden))
  tx, schedule = optimizers.regressor_optimizer(config.optim, num_steps)
  ctx_tx = optimizers.critic_optimizer(config.optim)
  ctx = step_lib.StepContext(module, critic, tx, ctx_tx, schedule, 4, data.convention,
                             bool(config.model.freeze_bn),
                             ml_collections.FrozenConfigDict(config.loss),
                             int(config.optim.critic_every),
                             float(config.train.ema_decay))
  compiled = step_lib.CompiledStep(ctx, mesh)
  v = state_lib.init_variables(module, 0, (120, 120), 4)
  cp = state_lib.init_critic(critic, 1, (120, 120))
  state = compiled.put_replicated(state_lib.create_train_state(v, cp, tx, ctx_tx))
  consts = compiled.put_replicated(step_lib.make_consts(
      data.model, data.param_stats.mean, data.param_stats.std))
  key = compiled.put_replicated(jax.random.PRNGKey(0))
  return compiled, state, consts, key
