"""Stopping a run at a step boundary: SIGTERM, Ctrl-C, and preemption agreed across
processes.

The loop asks ``stop(step)`` (:func:`stop_check`) before each step; when it answers
yes the loop raises :class:`Terminated`, saves the step reached, prints one line and
the command exits 128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C). A
second Ctrl-C stops at once (``KeyboardInterrupt``, nothing more saved).
"""
from __future__ import annotations

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

from dasl_jax.errors import warn

# What the one line says for each signal.
STOPPED_BY = {signal.SIGTERM: 'terminated (SIGTERM)', signal.SIGINT: 'interrupted (Ctrl-C)'}


class Terminated(Exception):
  """A signal stopped the run at a step boundary (after ``step`` steps, saved in
  ``workdir``); ``signum`` is SIGTERM or SIGINT, ``exit_code`` 128 + ``signum``."""

  def __init__(self, step, workdir, signum=signal.SIGTERM):
    super().__init__(f'{STOPPED_BY[signum]} after step {step} in {workdir}')
    self.step, self.workdir, self.signum = step, workdir, signum
    self.exit_code = 128 + int(signum)


class StopSignals:
  """Context manager: while inside, SIGTERM and a first SIGINT (Ctrl-C) only set
  ``requested`` (and ``signum``), so the loop stops at the next step boundary, never
  inside a compiled step or a checkpoint write; a second SIGINT raises
  ``KeyboardInterrupt`` at once. Main thread only (elsewhere Python cannot install
  handlers and this does nothing). The previous handlers are put back on exit.

  ``forward_sigint``: send SIGINT on as SIGTERM (several processes: JAX's preemption
  notifier, which agrees on the stopping step, listens to SIGTERM only).
  """

  def __init__(self):
    self.requested = False
    self.signum = None
    self.forward_sigint = False
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt  # the second Ctrl-C: stop at once
    if signum == signal.SIGINT and self.forward_sigint:
      self.requested, self.signum = True, signal.SIGTERM
      os.kill(os.getpid(), signal.SIGTERM)
      return
    self.requested, self.signum = True, signum

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    return False


def stop_check(signals: StopSignals, start):
  """``stop(step) -> bool``: whether to stop at the step boundary where ``step``
  steps are done (called with ``start``, ``start + 1``, ... before each step).

  One process: the signals' flag, read at no cost. Under ``jax.distributed``
  all processes must stop together, or the ones not signalled wait forever in
  the next step's collective. There ``jax.distributed.initialize`` has installed
  JAX's preemption notifier, which takes SIGTERM from Python's handler (so
  ``signals`` never hears of it; a Ctrl-C is sent on to it as SIGTERM) and tells
  the coordinator; every process then
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
    return (lambda step: signals.requested), False
  signals.forward_sigint = True
  if signals.requested:
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
      signals.forward_sigint = False
      return (lambda step: signals.requested), False
    warn("JAX's preemption service is off (jax_enable_preemption_service): "
         'SIGTERM will not stop the run at a step boundary')
    return (lambda step: False), False
  return multihost_utils.reached_preemption_sync_point, early
