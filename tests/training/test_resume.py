"""Resuming: a corrupt latest checkpoint is reported and the previous used; the
checkpoint manager keeps the last k and the best. (A run killed with SIGKILL and
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
