"""The train state: everything a step changes, as one pytree of arrays.

Optimiser transformations and modules are not in it (they live in the step's
closure), so the state is exactly what a checkpoint stores and what
``jax.jit`` donates.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TrainState:
  step: jnp.ndarray              # () int32, steps done
  params: Any                    # regressor params
  batch_stats: Any               # regressor batch-norm statistics
  opt_state: Any
  critic_params: Any
  critic_opt_state: Any
  # First step whose losses were not finite (-1: none) and the index of the
  # offending term in step.LOSS_NAMES; such a step leaves the weights unchanged.
  bad_step: jnp.ndarray
  bad_term: jnp.ndarray
  # Exponential moving average of the regressor's variables ({'params',
  # 'batch_stats'}); equal to them when the run keeps no average.
  ema: Any = None

  @property
  def variables(self):
    """The regressor's ``{'params', 'batch_stats'}`` as trained."""
    return {'params': self.params, 'batch_stats': self.batch_stats}

  def eval_variables(self, use_ema: bool):
    """What evaluation and the checkpoint item ``variables`` hold: the moving
    average when the run keeps one, else the trained variables."""
    return self.ema if use_ema and self.ema is not None else self.variables


def init_key(seed: int):
  """PRNG key for weight initialisation.

  The 'rbg' generator: XLA:CPU takes ~20 s to compile a ResNet's initialiser
  with the default threefry (one hash per tensor), ~2 s with rbg. Training
  randomness (``fold_in`` in the step) keeps the default generator.
  """
  return jax.random.key(int(seed), impl='rbg')


def init_variables(module, seed, image_shape, in_channels):
  """Initialise a regressor on a zero input (1, H, W, in_channels) from an int seed."""
  x = jnp.zeros((1,) + tuple(image_shape[:2]) + (in_channels,), jnp.float32)
  variables = jax.jit(lambda k: module.init(k, x, train=False))(init_key(seed))
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def init_critic(critic, seed, image_shape, num_params=62):
  """Initialise the self-critic on a zero colour image and parameter vector (int seed)."""
  x = jnp.zeros((1,) + tuple(image_shape[:2]) + (3,), jnp.float32)
  return jax.jit(lambda k: critic.init(k, x, jnp.zeros((1, num_params), jnp.float32)))(
      init_key(seed))


def create_train_state(variables, critic_params, tx, critic_tx) -> TrainState:
  """A step-0 state from initial variables and the two optimisers."""
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=variables['params'],
      batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params']),
      critic_params=critic_params, critic_opt_state=critic_tx.init(critic_params),
      bad_step=jnp.full((), -1, jnp.int32), bad_term=jnp.full((), -1, jnp.int32),
      ema=jax.tree_util.tree_map(jnp.array, {'params': variables['params'],
                                             'batch_stats': variables['batch_stats']}))
