"""Resuming: a corrupt latest checkpoint is reported, moved aside and the previous one
used; the checkpoint manager keeps the last k and the best. (A run killed with SIGKILL and
restarted ending bit-identical to an uninterrupted one: test_preemption.py, 10 kills.)"""
import jax.numpy as jnp
import numpy as np

from dasl_jax.training.checkpointing import TrainCheckpointer
from dasl_jax.training.state import TrainState


def _toy_state(v):
  f = lambda: jnp.full((3,), float(v))
  return TrainState(step=jnp.array(v, jnp.int32), params={'w': f()}, batch_stats={'m': f()},
                    opt_state=(f(),), critic_params={'c': f()}, critic_opt_state=(f(),),
                    bad_step=jnp.array(-1, jnp.int32), bad_term=jnp.array(-1, jnp.int32))


def _corrupt(step_dir):
  """Overwrite every data file of a step's train state with garbage (a disk error)."""
  for f in (step_dir / 'train_state').rglob('*'):
    if f.is_file() and f.name != '_CHECKPOINT_METADATA':
      f.write_bytes(b'\0garbage')


def test_corrupt_latest_checkpoint_is_moved_aside(tmp_path, capfd):
  """The newest step unreadable: one warning naming it, the step moved aside, the
  previous one restored, and the step can be saved again (left in place, Orbax
  refused the new save of that step: StepAlreadyExistsError, every restart)."""
  ck = TrainCheckpointer(tmp_path, keep=3, async_save=False)
  for s in (1, 2):
    ck.save(s, _toy_state(s), {'train_3d': {'index': s}})
  ck.close()
  _corrupt(tmp_path / 'checkpoints' / '2')
  ck = TrainCheckpointer(tmp_path, keep=3, async_save=False)
  state, data_state, step = ck.restore_latest(_toy_state(0))
  assert step == 1 and int(state.step) == 1 and data_state == {'train_3d': {'index': 1}}
  np.testing.assert_array_equal(np.asarray(state.params['w']), [1.0, 1.0, 1.0])
  err = capfd.readouterr().err.strip().splitlines()
  aside = tmp_path / 'unreadable_checkpoints' / '2'
  assert len(err) == 1 and err[0].startswith(f'warning: {tmp_path / "checkpoints" / "2"}: '
                                             'cannot read checkpoint'), err
  assert err[0].endswith(f'; moved aside to {aside}; resuming from step 1'), err
  assert (aside / 'train_state').is_dir() and ck.all_steps() == [1]
  ck.save(2, _toy_state(7), {'train_3d': {'index': 7}})  # trained again: saved in its place
  ck.close()
  # The same step bad again (and the only one left, once step 1 goes too): kept apart
  # under another name, and the run starts from step 0.
  _corrupt(tmp_path / 'checkpoints' / '2')
  _corrupt(tmp_path / 'checkpoints' / '1')
  ck = TrainCheckpointer(tmp_path, keep=3, async_save=False)
  assert ck.restore_latest(_toy_state(0)) is None
  ck.close()
  assert sorted(p.name for p in (tmp_path / 'unreadable_checkpoints').iterdir()) == \
      ['1', '2', '2-1']
  assert 'starting from step 0' in capfd.readouterr().err


def test_keeps_last_k_and_best_by_nme(tmp_path):
  ck = TrainCheckpointer(tmp_path, keep=2, async_save=False)
  for s, nme in zip(range(1, 6), (5.0, 1.0, 4.0, 3.0, 6.0)):
    ck.save(s, _toy_state(s), {}, nme=nme)
  ck.wait()
  assert ck.all_steps() == [2, 4, 5] and ck.best_step() == 2
  ck.close()
