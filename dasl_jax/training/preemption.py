"""Stopping a run at a step boundary: SIGTERM, and preemption agreed across processes.

The loop asks ``stop(step)`` (:func:`stop_check`) before each step; when it answers
yes the loop raises :class:`Terminated`, saves the step reached and the command
exits 143.
"""
from __future__ import annotations

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

from dasl_jax.errors import warn


class Terminated(Exception):
  """SIGTERM stopped the run at a step boundary (after ``step`` steps, saved in ``workdir``)."""

  def __init__(self, step, workdir):
    super().__init__(f'terminated (SIGTERM) after step {step} in {workdir}')
    self.step, self.workdir = step, workdir


class SigtermFlag:
  """Context manager: while inside, SIGTERM only sets ``requested`` (main thread only;
  elsewhere Python cannot install handlers and this does nothing). The previous
  handler is put back on exit."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
    return False


def stop_check(sigterm, start):
  """``stop(step) -> bool``: whether to stop at the step boundary where ``step``
  steps are done (called with ``start``, ``start + 1``, ... before each step).

  One process: the SIGTERM flag, read at no cost. Under ``jax.distributed``
  all processes must stop together, or the ones not signalled wait forever in
  the next step's collective. There ``jax.distributed.initialize`` has installed
  JAX's preemption notifier, which takes SIGTERM from Python's handler (so
  ``sigterm`` never fires) and tells the coordinator; every process then
  reports the last step id it passed to ``reached_preemption_sync_point`` and
  all agree on the next one after the largest. While that is being agreed the
  call blocks, so no process runs past the agreed boundary. The ids are step
  counts, as Orbax passes them from ``CheckpointManager.save``, which calls the
  same function (an id must mean the same boundary to both). Between signals
  the call is a lock and a comparison (no message), so every boundary is checked.

  Returns:
    (stop, early): ``early`` is True when the run must stop before its first step.
  """
  if not jax.distributed.is_initialized():
    return (lambda step: sigterm.requested), False
  if sigterm.requested:
    # SIGTERM came before jax.distributed.initialize, to Python's handler: send it
    # again, now to the preemption notifier, so that every process hears of it.
    os.kill(os.getpid(), signal.SIGTERM)
  try:
    # A notice that came before any process got here leaves every count at 0 and
    # agrees on id 1, which a run resumed past step 1 would never pass: ask for
    # it now. Then report `start` at once, so a later notice agrees on an id this
    # loop will pass.
    early = multihost_utils.reached_preemption_sync_point(1)
    early = multihost_utils.reached_preemption_sync_point(max(start, 1)) or early
  except RuntimeError:  # --jax_enable_preemption_service=False
    if jax.process_count() == 1:  # then Python's handler still gets SIGTERM
      return (lambda step: sigterm.requested), False
    warn("JAX's preemption service is off (jax_enable_preemption_service): "
         'SIGTERM will not stop the run at a step boundary')
    return (lambda step: False), False
  return multihost_utils.reached_preemption_sync_point, early
