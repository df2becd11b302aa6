"""Data parallelism: 1 device and 8 simulated CPU devices reach the same parameters.

The 8-device run is a subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=8``
must be set before JAX starts); it runs this file as a script.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers.train_runs import TEST_XLA_FLAGS

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


def run_steps(out_path):
  """Three full 2DASL steps of the tiny regressor (batch 8 + 8) on all local devices."""
  import jax
  from dasl_jax.training.fake_data import FakeData
  from tests.helpers.tiny_training import build, tiny_config
  data = FakeData(seed=0, batch_3d=8, batch_wild=8)
  compiled, state, consts, key = build(tiny_config(), data)
  for _ in range(STEPS):
    state, _ = compiled(state, *data.next(), key, consts)
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(
      {'params': state.params, 'batch_stats': state.batch_stats, 'critic': state.critic_params}))
  np.savez(out_path, n_devices=len(jax.devices()), mesh=compiled.mesh.devices.size,
           **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves})


def test_one_vs_eight_devices(tmp_path):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}',
             PYTHONPATH=str(REPO))
  # The two runs overlap: the 8-device one in a subprocess, the 1-device one here.
  proc = subprocess.Popen([sys.executable, '-m', 'tests.training.test_multidevice',
                           str(tmp_path / 'eight.npz')], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  run_steps(tmp_path / 'one.npz')
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  one, eight = np.load(tmp_path / 'one.npz'), np.load(tmp_path / 'eight.npz')
  assert int(eight['n_devices']) == 8 and int(eight['mesh']) == 8
  assert int(one['mesh']) == 1
  keys = [k for k in one.files if k not in ('n_devices', 'mesh')]
  assert len(keys) > 10 and sorted(keys) == sorted(k for k in eight.files
                                                    if k not in ('n_devices', 'mesh'))
  for k in keys:
    np.testing.assert_allclose(eight[k], one[k], rtol=2e-4, atol=2e-5, err_msg=k)


if __name__ == '__main__':
  run_steps(sys.argv[1])


_PREDICT_SCRIPT = r'''
import sys, numpy as np, jax
from dasl_jax.io import checkpoint
from dasl_jax.inference import core as predict_batch
from dasl_jax.geometry import params as P
from dasl_jax.models import ModelConfig
from tests.helpers.dataset_files import toy_model
cfg = ModelConfig(arch='mobilenet', width=0.25, in_channels=3, convention='v1')
rng = np.random.default_rng(0)
v = jax.tree_util.tree_map(lambda s: (rng.normal(size=s.shape) * 0.1).astype(np.float32),
                           checkpoint.expected_shapes(cfg, 32))
v['batch_stats'] = jax.tree_util.tree_map(lambda a: np.abs(a) + 0.5, v['batch_stats'])
stats = P.ParamStats(rng.normal(size=62).astype(np.float32), np.ones(62, np.float32))
fn = predict_batch.make_forward(checkpoint.create_regressor(cfg), 3, 'v1')
imgs = rng.integers(0, 256, (7, 120, 120, 3), dtype=np.uint8)
out = predict_batch.predict_crops(fn, v, stats, toy_model(), lambda ii: imgs[ii], 7, batch_size=4)
np.save(sys.argv[1], out['lms68'])
print(len(jax.devices()))
'''


def test_predict_all_split_over_host_devices_matches_one_device(tmp_path):
  """predict_crops over 2 host devices (batch split, weights replicated) gives the
  landmarks one device gives, partial last batch included."""
  outs = {}
  for n in (1, 2):
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={n} {TEST_XLA_FLAGS}')
    r = subprocess.run([sys.executable, '-c', _PREDICT_SCRIPT, str(tmp_path / f'{n}.npy')],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == str(n)
    outs[n] = np.load(tmp_path / f'{n}.npy')
  assert outs[1].shape == (7, 68, 2)
  np.testing.assert_allclose(outs[2], outs[1], atol=1e-3)
