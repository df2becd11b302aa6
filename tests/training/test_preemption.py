"""Preemption: SIGTERM saves the step reached and exits 143; a run killed with SIGKILL
again and again (during checkpoint writes too) and restarted each time ends
bit-identical to an uninterrupted one.

The reference is the uninterrupted tiny run of ``tests/helpers/train_runs.py`` (shared
with test_resume and test_train_command), whose checkpoints hold parameters
computed without any interruption: an independent reference.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from dasl_jax.io import checkpoint
from tests.helpers.train_runs import (REPO, cache_dir, checkpoint_steps, command, env,
                                 logged_steps, reference_run, run)

TMP = '.orbax-checkpoint-tmp'  # Orbax writes a step into '<step>.orbax-checkpoint-tmp' first



def _writing(wd):
  d = wd / 'checkpoints'
  try:
    return [n for n in os.listdir(d) if TMP in n]
  except FileNotFoundError:
    return []


def _assert_same_as_reference(wd):
  ref_wd, ref = reference_run()
  assert ref.returncode == 0, ref.stderr[-3000:]
  a, b = checkpoint.restore(ref_wd), checkpoint.restore(wd)
  assert a.step == b.step == 6
  la = jax.tree_util.tree_leaves_with_path(a.variables)
  lb = jax.tree_util.tree_leaves(b.variables)
  assert len(la) == len(lb)
  for (path, x), y in zip(la, lb):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)



def test_sigterm_saves_exits_143_and_resumes_bit_identical(tmp_path):
  reference_run()  # compiles into the shared cache first
  wd = tmp_path / 'preempted'
  # No periodic or evaluation checkpoints before the end: the step SIGTERM stops at
  # is saved by the SIGTERM path itself, not by the cadence.
  flags = ('--config.train.checkpoint_every=1000', '--config.train.eval_every=0',
           '--config.train.log_every=1')
  proc = subprocess.Popen(command(wd, *flags), cwd=REPO, env=env(cache_dir()),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  # Training is underway once the first step's losses are in log.jsonl.
  while not logged_steps(wd) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  assert proc.poll() is None, 'the run ended before SIGTERM could be sent'
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-3000:]
  last = err.strip().splitlines()[-1]
  prefix = 'terminated (SIGTERM): saved step '
  assert last.startswith(prefix) and last.endswith(
      f' in {wd}; rerun the same command to resume'), last
  step = int(last[len(prefix):].split()[0])
  assert 1 <= step < 6
  assert checkpoint_steps(wd) == [step]  # exactly the step reached, nothing later
  assert checkpoint.restore(wd).step == step
  assert 'step=' not in out  # no "finished" summary line
  r = run(wd, *flags, cache_dir=cache_dir())
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'resumed from {wd / "checkpoints" / str(step)}' in r.stderr
  _assert_same_as_reference(wd)


def test_sigterm_handler_is_restored(tmp_path):
  """train_and_evaluate puts the previous SIGTERM handler back, also when it fails."""
  from dasl_jax.training.config import default_config
  from dasl_jax.errors import DaslError
  from dasl_jax.training.loop import train_and_evaluate

  def mine(signum, frame):
    pass

  cfg = default_config()
  cfg.train.fake_data = True
  previous = signal.signal(signal.SIGTERM, mine)
  try:
    with pytest.raises(DaslError, match='data convention'):  # fails early in setup
      train_and_evaluate(cfg, tmp_path / 'wd', data=_ConventionOnly('no-such-convention'))
    assert signal.getsignal(signal.SIGTERM) is mine
  finally:
    signal.signal(signal.SIGTERM, previous)


class _ConventionOnly:
  def __init__(self, convention):
    self.convention = convention


N_KILLS = 10
STEPS = 6  # the reference run's length (tests/helpers/train_runs.py, tiny.flags)


def _kill_moment(proc, wd, mode, resumed_at, rng, startup_s):
  """Wait for the moment ``mode`` names, then SIGKILL. Returns where it landed.

  'startup': a uniformly random time in [0, startup_s) after launch (imports,
  restoring, compiling, the first step), cut short if the first write begins;
  'write': as soon as Orbax starts writing step ``resumed_at + 1``;
  'after': a random moment after step ``resumed_at + 1`` is complete, before the
  next write begins.
  """
  t0 = time.time()
  deadline = t0 + 240
  first, second = resumed_at + 1, resumed_at + 2
  # A killed write leaves its temporary folder behind: only folders this run
  # created count as its writes.
  stale = set(_writing(wd))

  def alive():
    return proc.poll() is None and time.time() < deadline

  def new_writes():
    return [n for n in _writing(wd) if n not in stale]

  def writing(step):
    return any(n.startswith(f'{step}.') for n in new_writes())

  if mode == 'startup':
    until = t0 + float(rng.uniform(0.0, startup_s))
    while alive() and time.time() < until and not writing(first) and \
        max(checkpoint_steps(wd), default=0) < first:
      time.sleep(0.002)
  elif mode == 'write':
    while alive() and not writing(first) and max(checkpoint_steps(wd), default=0) < first:
      time.sleep(0.0005)
  else:  # 'after'
    while alive() and max(checkpoint_steps(wd), default=0) < first:
      time.sleep(0.002)
    until = time.time() + float(rng.uniform(0.0, 0.4))
    while alive() and time.time() < until and not writing(second):
      time.sleep(0.001)
  during_write = bool(new_writes())
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, f'the run ended before it was killed ({mode})'
  if during_write:
    return 'write', time.time() - t0
  where = 'startup' if max(checkpoint_steps(wd), default=0) == resumed_at else 'after'
  return where, time.time() - t0


@pytest.mark.slow
def test_repeated_sigkill_then_resume_is_bit_identical(tmp_path):
  """SIGKILL at 10 seeded random moments, restarting after each, then a run to the end.

  The moments: 3 at a random time during a run's start (imports, restore,
  compilation, the first step: where a random moment in a restarted run mostly
  falls), 4 just after Orbax has begun writing a checkpoint (its
  ``<step>.orbax-checkpoint-tmp`` folder exists), 3 at a random time after a
  checkpoint is complete, before the next write. Kills of the first two kinds
  leave no new step; the third kind leaves one, so the 6-step reference run
  (tests/helpers/train_runs.py, uninterrupted, an independent reference) has room for
  10 kills and the last run still trains. Where each kill landed is printed
  (``pytest -s``): a planned moment can land in the next one on a slow machine
  (an 'after' kill inside the next write), which the counts below allow.
  Cost: each restart imports JAX and loads the compiled step from the persistent
  compilation cache the command tests share: 6 to 22 s per kill, 185 s for the
  10 kills and the last run on the shared 2-core machine at load ~3.5 (240 s with
  the reference run, which the other command tests share).
  """
  reference_run()  # fills the shared persistent compilation cache
  rng = np.random.default_rng(15)
  wd = tmp_path / 'killed'
  flags = ('--config.train.checkpoint_every=1',)
  plan = rng.permutation(['startup'] * 3 + ['write'] * 4 + ['after'] * 3)
  landed, startup_s = [], 8.0
  for mode in plan:
    resumed_at = max(checkpoint_steps(wd), default=0)
    if mode == 'after' and resumed_at >= STEPS - 1:
      mode = 'write'  # no step left to complete: the final run must still train
    proc = subprocess.Popen(command(wd, *flags), cwd=REPO, env=env(cache_dir()),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    where, seconds = _kill_moment(proc, wd, mode, resumed_at, rng, startup_s)
    if mode == 'write':  # the start-up of a run, measured, scales the next startup kill
      startup_s = seconds
    landed.append(where)
    print(f'kill {len(landed)}: planned {mode}, landed {where} after {seconds:.1f} s '
          f'(resumed at step {resumed_at})')
    assert max(checkpoint_steps(wd), default=0) >= resumed_at, 'a kill lost a completed checkpoint'
  assert len(landed) == N_KILLS
  assert landed.count('write') >= 3, landed
  assert landed.count('startup') >= 2, landed
  r = run(wd, *flags, cache_dir=cache_dir())
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'resumed from' in r.stderr
  _assert_same_as_reference(wd)
