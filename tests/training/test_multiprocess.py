"""Two processes on this machine train like one (issue 15).

``python -m experiments.train`` started twice with ``--config.train.distributed``
(a coordinator on a free localhost port, Gloo collectives on CPU, one device
each) against one work directory: each process feeds its own rows of every
global batch, both take part in the compiled step and in writing each Orbax
checkpoint. The reference is an independent, uninterrupted run of the same
flags in ONE process with two simulated devices.

The 2-process run gets SIGTERM, in process 1 only, once training is underway:
both processes must stop at the same step, save it together and exit 143; both
are restarted and must end with exactly the reference's variables. The two
layouts can be compared bit for bit: the batch rows land on the same two devices
in the same order, and combining two devices' gradients is one addition, which
does not depend on the order of its operands (with more devices, XLA's
reduction order could differ and a tolerance would be needed). So one
comparison checks both claims: 2 processes x 1 device = 1 process x 2 devices,
and stopping and resuming changes nothing. (A hard kill and resume is tested in
one process, tests/training/test_preemption.py: another 2-process leg would
cost a whole compilation, see below.)

Time: process 1 never finds the compiled step in the persistent compilation
cache on CPU. JAX writes cache entries from process 0 only, and its cache key
hashes the devices' topology, whose fingerprint differs between the two
processes (jax 0.10.2: the computation and compile-options parts of the key
are equal, the accelerator-config part is not), so a key written by process 0
never matches process 1's. Every 2-process leg therefore compiles the step in
process 1 (the long wait before the first step, ~45 s at low load, while
process 0 has loaded it and waits in the first collective); hence two legs only.
Nor is a checkpoint written every step: a joint Orbax save (coordination
barriers, and replica-parallel slicing whose small programs process 1 compiles
uncached too) took a step from ~1.3 s to ~2.7 s (load average 4-6).
"""
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dasl_jax.errors import DaslError
from dasl_jax.io import checkpoint
from dasl_jax.training import distributed
from dasl_jax.training.fake_data import FakeData
from tests.helpers.train_runs import (REPO, TEST_XLA_FLAGS, cache_dir, checkpoint_steps, command,
                                     env, logged_steps)


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices):
  e = env(cache_dir())
  e.update(XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}',
           JAX_PLATFORMS='cpu')
  for k in distributed.ENV.values():
    e.pop(k, None)
  return e


def start_two(workdir, *flags):
  """Two processes of one run (process ids 0 and 1), stderr to files in the workdir's parent."""
  port = free_port()
  procs = []
  for i in (0, 1):
    log = open(f'{workdir}.{i}.{time.monotonic_ns()}.log', 'w')
    procs.append((subprocess.Popen(
        command(workdir, '--config.train.distributed=True',
                f'--config.train.coordinator_address=localhost:{port}',
                '--config.train.num_processes=2', f'--config.train.process_id={i}', *flags),
        cwd=REPO, env=_env(1), stdout=log, stderr=subprocess.STDOUT), log))
  return procs


def finish(procs, timeout=900):
  out = []
  for p, log in procs:
    try:
      p.wait(timeout=timeout)
    finally:
      if p.poll() is None:
        p.kill()
      log.close()
    out.append((p.returncode, open(log.name).read()))
  return out




TERMINATED = re.compile(r'^terminated \(SIGTERM\): saved step (\d+) in (.+); '
                        r'rerun the same command to resume$', re.M)


def test_two_processes_sigterm_one_then_resume_equal_one_process_two_devices(tmp_path):
  # No periodic or evaluation checkpoints before the end: the step the processes
  # stop at is saved by the SIGTERM path itself, jointly.
  flags = ('--config.train.checkpoint_every=1000', '--config.train.eval_every=0',
           '--config.train.log_every=1')
  # Overlapped: the 1-process reference and the first, terminated leg of the 2-process run.
  ref_wd, wd = tmp_path / 'one_process', tmp_path / 'two_processes'
  ref = subprocess.Popen(command(ref_wd), cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
  procs = start_two(wd, *flags)
  deadline = time.time() + 900
  # Training is underway once the first step's losses are in log.jsonl.
  while (not logged_steps(wd) and time.time() < deadline
         and all(p.poll() is None for p, _ in procs)):
    time.sleep(0.01)
  assert all(p.poll() is None for p, _ in procs), 'a process ended before SIGTERM'
  # SIGTERM to process 1 only, as a scheduler preempting one host would: process 0
  # must hear of it through the coordinator and stop at the same step.
  procs[1][0].send_signal(signal.SIGTERM)
  stopped = finish(procs)
  for i, (rc, text) in enumerate(stopped):
    assert rc == 143, f'process {i} exited {rc}:\n{text[-3000:]}'
    assert not re.search(r'^step=', text, re.M)  # no "finished" summary line
  said = [TERMINATED.findall(text) for _, text in stopped]
  assert len(said[0]) == 1 and said[0] == said[1] and said[0][0][1] == str(wd), said
  step = int(said[0][0][0])
  assert 1 <= step < 6
  assert checkpoint_steps(wd) == [step]  # that step, saved once by both, nothing later
  assert checkpoint.restore(wd).step == step
  # Both restarted (a fresh coordinator port): they resume from the joint checkpoint.
  resumed = finish(start_two(wd, *flags))
  for i, (rc, text) in enumerate(resumed):
    assert rc == 0, f'process {i}:\n{text[-3000:]}'
    assert f'resumed from {wd / "checkpoints" / str(step)}' in text
    assert re.search(r'^step=6 ', text, re.M)
  _, err = ref.communicate(timeout=900)
  assert ref.returncode == 0, err[-3000:]
  a, b = checkpoint.restore(ref_wd), checkpoint.restore(wd)
  assert a.step == b.step == 6
  la = jax.tree_util.tree_leaves_with_path(a.variables)
  lb = jax.tree_util.tree_leaves(b.variables)
  assert len(la) == len(lb) > 10
  for (path, x), y in zip(la, lb):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)
  # One log (process 0's), with the resumed run's records after the stopped one's.
  log = (wd / 'log.jsonl').read_text()
  assert '"resumed": true' in log and '"step": 6' in log


def test_missing_coordinator_is_one_line_naming_the_flag(tmp_path):
  r = subprocess.run(command(tmp_path / 'wd', '--config.train.distributed=True',
                             '--config.train.num_processes=2', '--config.train.process_id=0'),
                     cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error:'), r.stderr[-2000:]
  assert '--config.train.coordinator_address' in lines[0]
  assert 'JAX_COORDINATOR_ADDRESS' in lines[0]


def test_settings_from_flags_then_environment():
  import ml_collections
  cfg = ml_collections.ConfigDict(dict(coordinator_address='', num_processes=-1,
                                       process_id=-1))
  env_ = {'JAX_COORDINATOR_ADDRESS': 'node0:1234', 'JAX_NUM_PROCESSES': '4',
          'JAX_PROCESS_ID': '3'}
  assert distributed.settings(cfg, env_) == {
      'coordinator_address': 'node0:1234', 'num_processes': 4, 'process_id': 3}
  cfg.process_id, cfg.coordinator_address = 1, 'here:99'
  assert distributed.settings(cfg, env_) == {
      'coordinator_address': 'here:99', 'num_processes': 4, 'process_id': 1}
  # Nothing given: JAX detects the cluster itself.
  empty = ml_collections.ConfigDict(dict(coordinator_address='', num_processes=-1,
                                         process_id=-1))
  assert distributed.settings(empty, {}) == {
      'coordinator_address': None, 'num_processes': None, 'process_id': None}
  if not distributed._cluster_detected():
    with pytest.raises(DaslError, match='--config.train.num_processes'):
      distributed.settings(empty, {'JAX_COORDINATOR_ADDRESS': 'a:1', 'JAX_PROCESS_ID': '0'})
  with pytest.raises(DaslError, match='--config.train.process_id must be in 0 .. 3'):
    distributed.settings(ml_collections.ConfigDict(dict(
        coordinator_address='a:1', num_processes=4, process_id=4)), {})
  with pytest.raises(DaslError, match=r'\$JAX_NUM_PROCESSES'):
    distributed.settings(empty, dict(env_, JAX_NUM_PROCESSES='two'))


def test_fake_data_processes_split_the_global_batch():
  one = FakeData(seed=3, batch_3d=4, batch_wild=4, shard=(0, 1), use_assets=False)
  two = [FakeData(seed=3, batch_3d=4, batch_wild=4, shard=(k, 2), use_assets=False)
         for k in (0, 1)]
  for _ in range(2):
    for stream in ('train_3d', 'train_wild'):
      whole = next(getattr(one, stream))
      parts = [next(getattr(d, stream)) for d in two]
      assert sorted(whole) == sorted(parts[0])
      for k in whole:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
  with pytest.raises(DaslError, match='--config.data.batch_size_wild=3'):
    FakeData(batch_3d=4, batch_wild=3, shard=(0, 2), use_assets=False)


def test_a_process_whose_data_position_differs_is_named():
  """Before a save, every process's data position must be process 0's (the only one
  written): the digests of processes 1 and 3 differ here, and one process has
  nothing to compare."""
  d = np.array([[5, 1], [5, 2], [5, 1], [6, 1]], np.uint32)
  assert distributed.differing_processes(d) == [1, 3]
  assert distributed.differing_processes(d[[0, 2]]) == []
  distributed.assert_same_everywhere({'streams': {'3d': {'next_index': 3}}}, 'x')  # 1 process
