"""``python -m experiments.train`` end to end on tiny fake data, and its NaN stop."""
import json

import numpy as np

from dasl_jax.io import checkpoint
from tests.helpers.train_runs import cache_dir, reference_run, run


def test_tiny_run_writes_everything():
  wd, r = reference_run()
  assert r.returncode == 0, r.stderr[-3000:]
  for name in ('flags.json', 'model_config.json', 'param_stats.json', 'log.jsonl'):
    assert (wd / name).exists(), name
  assert list((wd / 'tb').glob('events.out.tfevents.*'))
  lines = [json.loads(l) for l in (wd / 'log.jsonl').read_text().splitlines()]
  assert 'config' in lines[0] and lines[0]['config']['train']['num_steps'] == 6
  records = lines[1:]
  steps = [r['step'] for r in records]
  assert steps == sorted(steps) and steps[-1] == 6
  train = [r for r in records if 'total' in r]
  assert [r['step'] for r in train] == [2, 4, 6]
  for rec in train:
    for k in ('l3d', 'l2d_con', 'l3d_con', 'lcyc', 'lsc', 'critic', 'images_per_s', 'lr'):
      assert np.isfinite(rec[k]), k
    assert rec['steps_averaged'] == 2  # log_every
  nmes = [r for r in records if any('nme' in k for k in r)]
  assert [r['step'] for r in nmes] == [0, 3, 6] and all(np.isfinite(r['heldout_nme']) for r in nmes)
  flags = json.loads((wd / 'flags.json').read_text())
  assert flags['model']['resnet_width'] == 4
  # The run is a model checkpoint for inference too.
  restored = checkpoint.restore(wd)
  assert restored.step == 6 and restored.model_config.arch == 'resnet'
  assert sorted(int(p.name) for p in (wd / 'checkpoints').iterdir() if p.name.isdigit()) == [3, 6]


def test_nonfinite_loss_stops_with_message(tmp_path):
  wd = tmp_path / 'nan'
  # A NaN label in the 3D batch of step 2 (0-based); same compiled step as the tiny run.
  r = run(wd, '--config.train.fake_nan_batch=2', '--config.train.checkpoint_every=1',
          '--config.train.log_every=1', cache_dir=cache_dir())
  assert r.returncode == 2, r.stderr[-3000:]
  err = r.stderr.strip().splitlines()[-1]
  assert err.startswith('error: non-finite loss') and 'at step' in err, err
  assert 'non-finite loss l3d at step 2;' in err, err
  saved = sorted(int(p.name) for p in (wd / 'checkpoints').iterdir() if p.name.isdigit())
  # Steps 0 and 1 were good: checkpoints 1 and 2 (steps done), nothing after.
  assert saved == [1, 2]
  assert checkpoint.restore(wd).step == max(saved)
  # Training records are means over their interval, taken on device: the reference
  # run's step-2 record (log_every=2) is the mean of this run's records at steps 1
  # and 2 (log_every=1), its first two steps being the reference's.
  ref_wd, _ = reference_run()
  ref, mine = _train_records(ref_wd), _train_records(wd)
  assert sorted(mine) == [1, 2] and mine[1]['steps_averaged'] == 1
  assert ref[2]['steps_averaged'] == 2
  for k in ('total', 'l3d', 'l2d_con', 'lcyc', 'critic', 'grad_norm', 'lr'):
    np.testing.assert_allclose(ref[2][k], (mine[1][k] + mine[2][k]) / 2, rtol=1e-5, err_msg=k)


def _train_records(wd):
  lines = [json.loads(l) for l in (wd / 'log.jsonl').read_text().splitlines()]
  return {r['step']: r for r in lines if 'total' in r}
