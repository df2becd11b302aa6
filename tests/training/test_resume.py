"""Resuming: a run killed with SIGKILL and restarted ends bit-identical to an
uninterrupted one; a corrupt latest checkpoint is reported and the previous used."""
import os
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.io import checkpoint
from dasl_jax.training.checkpointing import TrainCheckpointer
from dasl_jax.training.state import TrainState
from tests.train_command import REPO, cache_dir, command, env, reference_run, run


def _steps(wd):
  return sorted(int(p.name) for p in (wd / 'checkpoints').iterdir() if p.name.isdigit())


def test_sigkill_then_resume_is_bit_identical(tmp_path):
  ref_wd, ref = reference_run()
  assert ref.returncode == 0, ref.stderr[-3000:]
  wd = tmp_path / 'killed'
  flags = ('--config.train.checkpoint_every=1',)
  proc = subprocess.Popen(command(wd, *flags), cwd=REPO, env=env(cache_dir()),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = wd / 'checkpoints' / '1'
  deadline = time.time() + 240
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, 'the run ended before it could be killed'
  assert max(_steps(wd)) < 6
  r = run(wd, *flags, cache_dir=cache_dir())
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'resumed from' in r.stderr
  a, b = checkpoint.restore(ref_wd), checkpoint.restore(wd)
  assert a.step == b.step == 6
  la = jax.tree_util.tree_leaves_with_path(a.variables)
  lb = jax.tree_util.tree_leaves(b.variables)
  for (path, x), y in zip(la, lb):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


def _toy_state(v):
  f = lambda: jnp.full((3,), float(v))
  return TrainState(step=jnp.array(v, jnp.int32), params={'w': f()}, batch_stats={'m': f()},
                    opt_state=(f(),), critic_params={'c': f()}, critic_opt_state=(f(),),
                    bad_step=jnp.array(-1, jnp.int32), bad_term=jnp.array(-1, jnp.int32))


def test_corrupt_latest_checkpoint_falls_back(tmp_path, capfd):
  ck = TrainCheckpointer(tmp_path, keep=3, async_save=False)
  for s in (1, 2):
    ck.save(s, _toy_state(s), {'train_3d': {'index': s}})
  ck.close()
  # Overwrite every file of the latest step's train state with garbage.
  for f in (tmp_path / 'checkpoints' / '2' / 'train_state').rglob('*'):
    if f.is_file() and f.name != '_CHECKPOINT_METADATA':
      f.write_bytes(b'\0garbage')
  ck = TrainCheckpointer(tmp_path, keep=3, async_save=False)
  state, data_state, step = ck.restore_latest(_toy_state(0))
  ck.close()
  assert step == 1 and int(state.step) == 1 and data_state == {'train_3d': {'index': 1}}
  np.testing.assert_array_equal(np.asarray(state.params['w']), [1.0, 1.0, 1.0])
  err = capfd.readouterr().err
  assert 'checkpoints/2' in err and 'cannot read checkpoint' in err


def test_keeps_last_k_and_best_by_nme(tmp_path):
  ck = TrainCheckpointer(tmp_path, keep=2, async_save=False)
  for s, nme in zip(range(1, 6), (5.0, 1.0, 4.0, 3.0, 6.0)):
    ck.save(s, _toy_state(s), {}, nme=nme)
  ck.wait()
  assert ck.all_steps() == [2, 4, 5] and ck.best_step() == 2
  ck.close()
