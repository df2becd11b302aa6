"""Optimisers: the paper's SGD recipe, Adam/AdamW, warm-up, clipping, the critic's,
and starting the regressor from a converted checkpoint.
"""
from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from dasl_jax.errors import DaslError


def learning_rate_schedule(optim, num_steps):
  """Linear warm-up to ``optim.lr``, then exponential decay to ``lr * decay_to`` at ``num_steps``.

  The paper decays 0.004 exponentially to 0.001x over 50 epochs; decaying per
  step (continuously) is the same curve without epoch steps.
  """
  warmup = int(optim.warmup_steps)
  decay_steps = max(int(num_steps) - warmup, 1)
  if not 0 < optim.decay_to <= 1:
    raise DaslError(f'--config.optim.decay_to must be in (0, 1], got {optim.decay_to}')
  decay = optax.exponential_decay(optim.lr, decay_steps, optim.decay_to)
  if warmup <= 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, optim.lr, warmup), decay], [warmup])


def regressor_optimizer(optim, num_steps):
  """The regressor's optax transformation and its schedule (for logging).

  sgd: PyTorch's SGD (weight decay added to the gradient before Nesterov
  momentum), as 2DASL/3DDFA train. adam: L2 added to the gradient. adamw:
  decoupled weight decay.
  """
  schedule = learning_rate_schedule(optim, num_steps)
  parts = []
  if optim.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  if optim.name == 'sgd':
    if optim.weight_decay:
      parts.append(optax.add_decayed_weights(optim.weight_decay))
    parts.append(optax.sgd(schedule, momentum=optim.momentum or None,
                           nesterov=bool(optim.nesterov)))
  elif optim.name == 'adam':
    if optim.weight_decay:
      parts.append(optax.add_decayed_weights(optim.weight_decay))
    parts.append(optax.adam(schedule, eps=float(optim.adam_eps)))
  elif optim.name == 'adamw':
    parts.append(optax.adamw(schedule, weight_decay=optim.weight_decay, eps=float(optim.adam_eps)))
  else:
    raise DaslError(f'--config.optim.name must be sgd, adam or adamw, got {optim.name!r}')
  return optax.chain(*parts), schedule


def critic_optimizer(optim):
  """The critic's own optimiser (Adam with beta1 0.5 by default, or SGD)."""
  if optim.critic_name == 'adam':
    return optax.adam(optim.critic_lr, b1=optim.critic_b1)
  if optim.critic_name == 'sgd':
    return optax.sgd(optim.critic_lr, momentum=optim.momentum)
  raise DaslError(f'--config.optim.critic_name must be adam or sgd, got {optim.critic_name!r}')


def _path_str(path):
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def adapt_variables(source, target, source_name='init checkpoint'):
  """Fit restored variables onto a freshly initialised tree of the same network.

  Every leaf must exist with the same shape, except convolution kernels
  (H, W, Cin, Cout) whose input channels grow 3 -> 4 (a colour-only checkpoint
  starting a colour + FLM model): the new channel's weights are zero, so the
  network initially computes exactly what the checkpoint did.

  Args:
    source: restored ``{'params', 'batch_stats'}``.
    target: initialised variables of the network to train.
  Returns:
    a tree with ``target``'s structure and ``source``'s values.
  """
  src = {_path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(source)[0]}
  widened = []

  def fit(path, t):
    key = _path_str(path)
    if key not in src:
      raise DaslError(f'{source_name}: no variable {key} (architectures differ?)')
    s = src[key]
    if s.shape == t.shape:
      return np.asarray(s, t.dtype)
    if (s.ndim == 4 and t.ndim == 4 and s.shape[:2] == t.shape[:2]
        and s.shape[3] == t.shape[3] and s.shape[2] == 3 and t.shape[2] == 4):
      widened.append(key)
      pad = np.zeros(s.shape[:2] + (1,) + s.shape[3:], s.dtype)
      return np.concatenate([s, pad], axis=2).astype(t.dtype)
    raise DaslError(f'{source_name}: variable {key} has shape {s.shape}, the model needs {t.shape}')

  out = jax.tree_util.tree_map_with_path(fit, target)
  if widened:
    print(f'init: widened {", ".join(widened)} from 3 to 4 input channels (zero FLM weights)',
          file=sys.stderr)
  return out


def load_init_variables(workdir, target):
  """Variables from a model work dir (``dasl_jax.io.checkpoint.restore``) adapted to ``target``.

  Returns:
    (variables, Restored) — the caller checks whitening statistics against its data's.
  """
  from dasl_jax.io import checkpoint
  restored = checkpoint.restore(workdir)
  return adapt_variables(restored.variables, target, f'--config.model.init_checkpoint={workdir}'), \
      restored
