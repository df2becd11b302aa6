"""Preemption: SIGTERM saves the step reached and exits 143; a run killed with SIGKILL
again and again (during checkpoint writes too) and restarted each time ends
bit-identical to an uninterrupted one.

The reference is the uninterrupted tiny run of ``tests/train_command.py`` (shared
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
from tests.train_command import REPO, cache_dir, command, env, reference_run, run

TMP = '.orbax-checkpoint-tmp'  # Orbax writes a step into '<step>.orbax-checkpoint-tmp' first


def _steps(wd):
  d = wd / 'checkpoints'
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


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


def _logged_steps(wd):
  import json
  f = wd / 'log.jsonl'
  if not f.exists():
    return []
  out = []
  for line in f.read_text().splitlines():
    try:
      rec = json.loads(line)
    except ValueError:  # a line being written
      continue
    if 'total' in rec:
      out.append(rec['step'])
  return out


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
  while not _logged_steps(wd) and proc.poll() is None and time.time() < deadline:
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
  assert _steps(wd) == [step]  # exactly the step reached, nothing later
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


N_KILLS = 4


@pytest.mark.slow
def test_repeated_sigkill_then_resume_is_bit_identical(tmp_path):
  """SIGKILL at 4 seeded moments, restarting after each, then a run to the end.

  Two kills land while Orbax is writing a checkpoint (its
  ``<step>.orbax-checkpoint-tmp`` folder exists), two at a random time after a
  checkpoint is complete (during the next step, before its write). Every run gets
  exactly one step past where it resumed before it is killed (else the test could
  loop forever). Why 4 and not the issue's 10: each restart costs imports plus
  loading the step from the persistent compilation cache, measured 10-12 s on the
  shared 2-core machine at low load and ~20 s at load average 6 (5 kills + the
  final run took 138 s there; this test with 4 kills: 46 s at load ~5, 94 s at ~7). Ten kills need an 11-step reference (the 6-step
  one allows at most 5), a different compiled step (the learning-rate schedule
  depends on num_steps), so another uncached compile (~35 s) on top of 11
  restarts: 150-250 s against the ~90 s budget. The persistent compilation cache
  (tests/train_command.py: a temporary folder shared by the command tests) is what
  makes restarts affordable: a whole 6-step tiny run took 34.5 s uncached and 11.6 s
  with the cache filled (same machine, low load).
  """
  reference_run()  # fills the shared persistent compilation cache
  rng = np.random.default_rng(15)
  wd = tmp_path / 'killed'
  flags = ('--config.train.checkpoint_every=1',)
  modes = rng.permutation(['write', 'after'] * (N_KILLS // 2))
  during_write = 0
  for mode in modes:
    resumed_at = max(_steps(wd), default=0)
    proc = subprocess.Popen(command(wd, *flags), cwd=REPO, env=env(cache_dir()),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    target = resumed_at + 1
    while (max(_steps(wd), default=0) < target and proc.poll() is None
           and time.time() < deadline):
      time.sleep(0.002)
    # 'write': as soon as the next step's write has begun; 'after': a random moment
    # after step `target` is complete, before the next write begins (so every run
    # gets exactly one step further and the 6 steps allow 5 kills).
    until = time.time() + (float(rng.uniform(0.0, 0.4)) if mode == 'after' else 240)
    while (not any(n.startswith(f'{target + 1}.') for n in _writing(wd))
           and proc.poll() is None and time.time() < min(deadline, until)):
      time.sleep(0.001)
    writing = _writing(wd)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f'the run ended before it was killed ({mode})'
    during_write += bool(writing)
    assert max(_steps(wd)) >= target
  assert during_write >= 2, 'no kill landed during a checkpoint write'
  r = run(wd, *flags, cache_dir=cache_dir())
  assert r.returncode == 0, r.stderr[-3000:]
  _assert_same_as_reference(wd)
