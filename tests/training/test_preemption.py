"""Preemption: SIGTERM and Ctrl-C save the step reached and exit 143 / 130; a run whose
newest checkpoint is unreadable moves it aside and finishes; a run killed with
SIGKILL again and again (during checkpoint writes too) and restarted each time ends
bit-identical to an uninterrupted one.

The reference is the uninterrupted tiny run of ``tests/helpers/train_runs.py`` (shared
with test_resume and test_train_command), whose checkpoints hold parameters
computed without any interruption: an independent reference.
"""
import os
import signal
import subprocess
import time

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



def _stop_after_first_logged_step(wd, flags, signum):
  """Start the command, send ``signum`` once its first step is logged, and check the
  one line it ends with. Returns the step it saved."""
  proc = subprocess.Popen(command(wd, *flags), cwd=REPO, env=env(cache_dir()),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  before = set(logged_steps(wd))
  deadline = time.time() + 600
  # Training is underway once a new step's losses are in log.jsonl.
  while not set(logged_steps(wd)) - before and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  assert proc.poll() is None, 'the run ended before the signal could be sent'
  proc.send_signal(signum)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signum, err[-3000:]
  assert 'Traceback' not in err, err[-3000:]
  last = err.strip().splitlines()[-1]
  prefix = {signal.SIGINT: 'interrupted (Ctrl-C): saved step ',
            signal.SIGTERM: 'terminated (SIGTERM): saved step '}[signum]
  assert last.startswith(prefix) and last.endswith(
      f' in {wd}; rerun the same command to resume'), last
  assert 'step=' not in out  # no "finished" summary line
  return int(last[len(prefix):].split()[0])


def test_ctrl_c_and_sigterm_save_the_step_reached_and_resume_bit_identical(tmp_path):
  """Ctrl-C, then SIGTERM to the resumed run: each saves exactly the step reached,
  says so in one line and exits 130 / 143; the run resumed to the end is the
  uninterrupted reference, bit for bit."""
  reference_run()  # compiles into the shared cache first
  wd = tmp_path / 'preempted'
  # No periodic or evaluation checkpoints before the end: the step a signal stops at
  # is saved by the stopping path itself, not by the cadence.
  flags = ('--config.train.checkpoint_every=1000', '--config.train.eval_every=0',
           '--config.train.log_every=1')
  first = _stop_after_first_logged_step(wd, flags, signal.SIGINT)
  assert 1 <= first < 6
  assert checkpoint_steps(wd) == [first]  # exactly the step reached, nothing later
  assert checkpoint.restore(wd).step == first
  if first <= 4:  # room for a logged step before the SIGTERM (a very slow machine: none)
    second = _stop_after_first_logged_step(wd, flags, signal.SIGTERM)
    assert first < second < 6 and checkpoint_steps(wd) == [first, second]
  print(f'stopped by Ctrl-C at step {first}' + (f', by SIGTERM at {second}' if first <= 4 else ''))
  r = run(wd, *flags, cache_dir=cache_dir())
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'resumed from {wd / "checkpoints"}' in r.stderr
  _assert_same_as_reference(wd)


def test_unreadable_newest_checkpoint_is_moved_aside_and_the_run_finishes(tmp_path):
  """The fault of issue 21: the newest step's data files corrupted (a disk error, a
  half-copied folder). The restart warns once, naming the step and where it went,
  resumes from the step before, trains the lost steps again and saves them where the
  unreadable step was (exit 0, no traceback), ending as the reference did."""
  import shutil
  ref_wd, ref = reference_run()
  assert ref.returncode == 0, ref.stderr[-3000:]
  wd = tmp_path / 'corrupt'
  shutil.copytree(ref_wd, wd)
  for f in (wd / 'checkpoints' / '6' / 'train_state').rglob('*'):
    if f.is_file() and f.name != '_CHECKPOINT_METADATA':
      f.write_bytes(b'\0garbage')
  r = run(wd, cache_dir=cache_dir())
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Traceback' not in r.stderr and 'Event loop is closed' not in r.stderr, r.stderr
  warnings = [l for l in r.stderr.splitlines() if l.startswith('warning: ')]
  assert len(warnings) == 1, warnings
  assert warnings[0].startswith(f'warning: {wd / "checkpoints" / "6"}: cannot read checkpoint')
  assert warnings[0].endswith(f'moved aside to {wd / "unreadable_checkpoints" / "6"}; '
                              'resuming from step 3'), warnings[0]
  assert f'resumed from {wd / "checkpoints" / "3"}' in r.stderr
  assert checkpoint_steps(wd) == [3, 6] and (wd / 'unreadable_checkpoints' / '6').is_dir()
  _assert_same_as_reference(wd)


def test_signal_handlers_are_restored(tmp_path):
  """train_and_evaluate puts the previous SIGTERM and SIGINT handlers back, also when
  it fails."""
  from dasl_jax.training.config import default_config
  from dasl_jax.errors import DaslError
  from dasl_jax.training.loop import train_and_evaluate

  def mine(signum, frame):
    pass

  cfg = default_config()
  cfg.train.fake_data = True
  previous = {s: signal.signal(s, mine) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    with pytest.raises(DaslError, match='data convention'):  # fails early in setup
      train_and_evaluate(cfg, tmp_path / 'wd', data=_ConventionOnly('no-such-convention'))
    assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def test_ctrl_c_asks_for_a_stop_and_a_second_one_stops_at_once():
  """The first Ctrl-C only sets the flag the loop reads at step boundaries (never a
  KeyboardInterrupt inside a compiled step or a checkpoint write); the second raises
  KeyboardInterrupt at once; SIGTERM sets the flag and names itself."""
  from dasl_jax.training.preemption import StopSignals, Terminated
  with StopSignals() as s:
    os.kill(os.getpid(), signal.SIGINT)
    assert s.requested and s.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  with StopSignals() as s:
    os.kill(os.getpid(), signal.SIGTERM)
    assert s.requested and s.signum == signal.SIGTERM
  assert Terminated(3, 'w', signal.SIGINT).exit_code == 130
  assert Terminated(3, 'w', signal.SIGTERM).exit_code == 143


def test_unhandled_ctrl_c_in_a_command_is_one_line(capsys):
  from dasl_jax import cli

  def body(argv):
    raise KeyboardInterrupt

  before = jax.config.jax_compilation_cache_dir  # the preamble turns the cache on
  try:
    with pytest.raises(SystemExit) as e:
      cli.command(body, tune_malloc=False)(['x'])
  finally:
    jax.config.update('jax_compilation_cache_dir', before)
  assert e.value.code == 130
  assert capsys.readouterr().err == 'interrupted (Ctrl-C)\n'


class _ConventionOnly:
  def __init__(self, convention):
    self.convention = convention


N_KILLS = 7
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
  """SIGKILL at 7 seeded random moments, restarting after each, then a run to the end.

  The moments: 2 at a random time during a run's start (imports, restore,
  compilation, the first step: where a random moment in a restarted run mostly
  falls), 3 just after Orbax has begun writing a checkpoint (its
  ``<step>.orbax-checkpoint-tmp`` folder exists), 2 at a random time after a
  checkpoint is complete, before the next write. Kills of the first two kinds
  leave no new step; the third kind leaves one, so the 6-step reference run
  (tests/helpers/train_runs.py, uninterrupted, an independent reference) has room for
  the kills and the last run still trains. Where each kill landed is printed
  (``pytest -s``): a planned moment can land in the next one on a slow machine
  (an 'after' kill inside the next write), which the counts below allow.
  Cost: each restart imports JAX and loads the compiled step from the persistent
  compilation cache the command tests share: 6 to 22 s per kill (7 kills, not the
  10 of before, to keep the whole suite inside its 15 minutes on 2 cores; every kind
  of moment is still planned at least twice).
  """
  reference_run()  # fills the shared persistent compilation cache
  rng = np.random.default_rng(15)
  wd = tmp_path / 'killed'
  flags = ('--config.train.checkpoint_every=1',)
  plan = rng.permutation(['startup'] * 2 + ['write'] * 3 + ['after'] * 2)
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
  assert landed.count('write') >= 2, landed
  assert landed.count('startup') >= 1, landed
  r = run(wd, *flags, cache_dir=cache_dir())
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'resumed from' in r.stderr
  _assert_same_as_reference(wd)
