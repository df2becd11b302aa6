"""Train checkpoints: Orbax CheckpointManager on the model-checkpoint layout.

Items per step (``WORKDIR/checkpoints/<step>/``): ``variables`` (the regressor's
``{'params', 'batch_stats'}``, what ``dasl_jax.io.checkpoint.restore`` reads),
``train_state`` (the whole :class:`TrainState`: optimisers, critic, step) and
``data`` (the loaders' JSON state, so a resumed run sees the batches an
uninterrupted one would). Kept: the last ``keep`` steps plus the best by
held-out NME (Orbax ``AnyPreservationPolicy`` of ``LatestN`` and ``BestN``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as cm

from dasl_jax.errors import warn
from dasl_jax.io import checkpoint

ITEMS = (checkpoint.VARIABLES, 'train_state', 'data')
UNREADABLE = 'unreadable_checkpoints'  # WORKDIR/unreadable_checkpoints/<step>: moved aside
METRIC = 'nme'


def _nme(metrics):
  return metrics[METRIC]


class TrainCheckpointer:
  """Save and resume a run in ``WORKDIR/checkpoints``."""

  def __init__(self, workdir, keep: int = 3, async_save: bool = True):
    policy = cm.AnyPreservationPolicy([
        cm.LatestN(n=max(int(keep), 1)),
        # BestN sorts ascending by default and keeps the last n: reverse for "lowest NME".
        cm.BestN(get_metric_fn=_nme, reverse=True, n=1, keep_checkpoints_without_metrics=False),
    ])
    self.workdir = workdir
    self.mngr = checkpoint.checkpoint_manager(
        workdir, item_names=ITEMS, preservation_policy=policy,
        best_fn=_nme, best_mode='min',  # for best_step(); deletion follows the policy
        enable_async_checkpointing=async_save)

  def latest_step(self) -> Optional[int]:
    return self.mngr.latest_step()

  def all_steps(self):
    return sorted(self.mngr.all_steps())

  def best_step(self) -> Optional[int]:
    return self.mngr.best_step()

  def save(self, step: int, state, data_state: dict, nme: Optional[float] = None,
           variables=None):
    """Save ``state`` at ``step`` (asynchronously); ``nme`` ranks it for 'best';
    ``variables`` (default the state's trained ones) is what inference restores."""
    args = ocp.args.Composite(**{
        checkpoint.VARIABLES: ocp.args.StandardSave(
            state.variables if variables is None else variables),
        'train_state': ocp.args.StandardSave(state),
        'data': ocp.args.JsonSave(data_state or {}),
    })
    metrics = {METRIC: float(nme)} if nme is not None and np.isfinite(nme) else None
    self.mngr.save(int(step), args=args, metrics=metrics, force=True)

  def restore_latest(self, target):
    """Newest readable step: (state, data_state, step), or None when there is none.

    A step that cannot be read (truncated or corrupt files: a disk error, a
    half-copied folder; ``checkpoint.newest_readable``) is moved aside to
    ``WORKDIR/unreadable_checkpoints/<step>`` with one warning naming both, and the
    step before it is tried: the run then trains that step again and saves it in
    its place (left where it was, the unreadable step would make that save fail).

    Args:
      target: a state with the right structure, dtypes and shardings.
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)

    def read(step):
      return self.mngr.restore(step, args=ocp.args.Composite(
          train_state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))

    step, out, unreadable = checkpoint.newest_readable(self.mngr.directory, self.all_steps(),
                                                      read, warn_fallback=False)
    if unreadable:
      self._move_aside(unreadable, step)
    if step is None:
      return None
    return out['train_state'], dict(out['data'] or {}), step

  def _move_aside(self, unreadable, resumed_at):
    aside = Path(self.workdir) / UNREADABLE
    then = (f'resuming from step {resumed_at}' if resumed_at is not None
            else 'starting from step 0')
    if jax.process_index() == 0:  # one shared work directory
      aside.mkdir(parents=True, exist_ok=True)
      for step, msg in unreadable:
        dst, k = aside / str(step), 1
        while dst.exists():  # the same step may go bad twice
          dst, k = aside / f'{step}-{k}', k + 1
        os.replace(Path(str(self.mngr.directory)) / str(step), dst)
        warn(f'{msg}; moved aside to {dst}; {then}')
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('dasl_jax: unreadable checkpoints moved aside')
    self.mngr.reload()

  def wait(self):
    self.mngr.wait_until_finished()

  def close(self):
    self.mngr.wait_until_finished()
    self.mngr.close()
