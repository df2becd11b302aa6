"""benchmarks/accelerator.py, the GPU run prepared for issue 15, checked on the CPU.

The real step runs here on the tests' tiny regressor (the tiny ResNet of ``--smoke``
takes minutes to compile on the shared 2-core machine); out of memory, the budget
and the watchdog are driven by stand-in measurements, since a CPU does not run out
of device memory the way a GPU does.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest

from benchmarks import accelerator as acc
from dasl_jax.errors import DaslError

ROOT = Path(__file__).resolve().parents[1]


def _fake_point(batch, step_ms=10.0, compile_s=0.01):
  return {'batch_per_path': batch, 'pairs_per_step': batch, 'lower_s': 0.0,
          'compile_s': compile_s, 'step_ms': step_ms, 'pairs_per_s': batch / step_ms * 1e3,
          'pairs_per_s_device_batches': batch / step_ms * 1e3}


@pytest.mark.slow  # the benchmark's real train step compiled (~10 s): whole suite only
def test_real_step_end_to_end_writes_the_json(tmp_path):
  """The tiny regressor through loop.build_step / init_state, one batch point (each
  point is a compile: ~25 s on the shared 2-core machine)."""
  from tests.helpers.tiny_training import TinyRegressor
  out = tmp_path / 'acc.json'
  res = acc.run(cases=['tiny_f32'], batches=['2'], budget_s=300, time_per_point_s=0.05,
                json_path=str(out), inference=False, module=TinyRegressor())
  on_disk = json.loads(out.read_text())
  assert {'machine', 'versions', 'command', 'timestamp'} <= set(on_disk)
  assert on_disk['finished'] and not on_disk.get('stopped_by_watchdog')
  assert on_disk['aim_pairs_per_s'] == 10_000 and 'pair' in on_disk
  assert on_disk['device']['platform'] == jax.devices()[0].platform
  assert on_disk['device']['device_kind']
  case = on_disk['cases']['tiny_f32']
  assert case['compute_dtype'] == 'float32' and case['init_s'] > 0
  assert [p['batch_per_path'] for p in case['points']] == [2]
  for p in case['points']:
    b = p['batch_per_path']
    assert p['pairs_per_step'] == b and p['crops_per_step'] == 2 * b
    assert p['compile_s'] > 0 and p['step_ms'] > 0 and p['steps_timed'] >= 3
    # pairs/s = batch per path / step seconds (one 3D + one wild crop per pair)
    assert p['pairs_per_s'] == pytest.approx(b / (p['step_ms'] / 1e3))
    assert p['pairs_per_s_device_batches'] == pytest.approx(
        b / (p['step_ms_device_batches'] / 1e3))
    assert p['ratio_to_aim'] == pytest.approx(p['pairs_per_s'] / 10_000)
    assert isinstance(p['loss_total_last'], float)
  assert case['status'] == {'stopped_by': 'list end'}
  summary = on_disk['summary']['tiny_f32']
  assert summary['largest_batch_run'] == 2
  assert on_disk['best']['case'] == 'tiny_f32'
  assert res['best']['best_pairs_per_s'] == summary['best_pairs_per_s']


def test_out_of_memory_stops_the_case_and_the_next_case_runs(tmp_path):
  calls = []

  def measure(name, batch):
    calls.append((name, batch))
    if batch >= 8:
      # What XLA raises when a device allocation fails.
      raise jax.errors.JaxRuntimeError(
          'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456789 bytes.')
    return _fake_point(batch)

  out = tmp_path / 'acc.json'
  acc.run(cases=['tiny_f32', 'tiny_bf16'], batches=[2, 4, 8, 16], budget_s=60,
          time_per_point_s=0.01, json_path=str(out), inference=False, measure=measure)
  res = json.loads(out.read_text())
  assert calls == [('tiny_f32', 2), ('tiny_f32', 4), ('tiny_f32', 8),
                   ('tiny_bf16', 2), ('tiny_bf16', 4), ('tiny_bf16', 8)]
  for name in ('tiny_f32', 'tiny_bf16'):
    points = res['cases'][name]['points']
    assert [p['batch_per_path'] for p in points] == [2, 4, 8]
    assert 'RESOURCE_EXHAUSTED' in points[-1]['out_of_memory']
    assert res['cases'][name]['status'] == {'stopped_by': 'out_of_memory', 'batch_per_path': 8}
    s = res['summary'][name]
    assert s['out_of_memory_at_batch'] == 8 and s['best_batch_per_path'] == 4
  assert res['finished']


def test_other_errors_are_recorded_apart_from_out_of_memory(tmp_path):
  def measure(name, batch):
    raise ValueError('something else')
  res = acc.run(cases=['tiny_f32'], batches=[2, 4], budget_s=60, time_per_point_s=0.01,
                inference=False, measure=measure)
  (p,) = res['cases']['tiny_f32']['points']
  assert p['error'] == 'something else' and 'out_of_memory' not in p
  assert not acc.is_oom(ValueError('RESOURCE_EXHAUSTED'))  # only JAX's runtime error
  assert acc.is_oom(MemoryError())


def test_a_point_that_would_overrun_the_budget_is_not_started():
  calls = []

  def measure(name, batch):
    calls.append(batch)
    return _fake_point(batch, compile_s=1000.0)  # the next compile would not fit

  res = acc.run(cases=['tiny_f32'], batches=[2, 4], budget_s=60, time_per_point_s=0.01,
                inference=False, measure=measure)
  assert calls == [2]
  status = res['cases']['tiny_f32']['status']
  assert status['stopped_by'] == 'budget' and status['next_batch'] == 4


_WATCHDOG = """
import time, sys
from benchmarks import accelerator as acc
acc.run(cases=['tiny_f32'], batches=[2], budget_s=15, time_per_point_s=0.01,
        json_path=sys.argv[1], inference=False,
        measure=lambda name, batch: time.sleep(120))  # a compile that never ends
print('not reached')
"""


def test_watchdog_ends_the_process_at_the_budget_and_leaves_the_json(tmp_path):
  # 15 s: the budget counts from run()'s start, and the set-up before the first case
  # is recorded (JAX's start, package versions) took over 3 s on a 2-core AVX2 machine.
  out = tmp_path / 'acc.json'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  p = subprocess.run([sys.executable, '-c', _WATCHDOG, str(out)], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=100)
  assert p.returncode == 3, p.stderr[-2000:]
  assert 'not reached' not in p.stdout and 'watchdog' in p.stdout
  res = json.loads(out.read_text())
  assert res['stopped_by_watchdog'] and not res['finished']
  assert 'tiny_f32' in res['cases']


def test_recipe_flagfile_reads_as_the_train_command_reads_it():
  """The recipe case's config against experiments.train's own flag parsing (a
  separate process with the command's DEFINE_config_dict and the flagfile)."""
  code = textwrap.dedent(f"""
      import json, sys
      sys.argv = ['x', '--flagfile={acc.RECIPE}']
      from absl import flags
      from ml_collections import config_flags
      from dasl_jax.training.config import default_config
      config_flags.DEFINE_config_dict('config', default_config())
      flags.FLAGS(sys.argv)
      print(flags.FLAGS.config.to_json())""")
  p = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                     timeout=100, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert p.returncode == 0, p.stderr[-2000:]
  expected = json.loads(p.stdout.strip().splitlines()[-1])
  c = acc.case_config('resnet50_bf16')
  assert (c.model.arch, c.model.depth, c.model.compute_dtype) == ('resnet', 50, 'bfloat16')
  got = json.loads(c.to_json())
  for d in (got, expected):  # what case_config sets on top of the recipe
    d['model'].pop('compute_dtype')
    d['train'].pop('progress')
  assert got == expected


def test_bad_recipe_is_one_clear_error(tmp_path):
  f = tmp_path / 'x.flags'
  f.write_text('# comment\n--config.optim.learning_rate=0.1\n')
  with pytest.raises(DaslError, match=r'--config.optim.learning_rate: no such field.*did you '
                     r'mean --config.optim.lr'):
    acc.case_config('resnet50_f32', recipe=f)
  f.write_text('--config.model.depth=fifty\n')
  with pytest.raises(DaslError, match=r"--config.model.depth=fifty: invalid literal for int"):
    acc.case_config('resnet50_f32', recipe=f)
  with pytest.raises(DaslError, match=r'--recipe: .*nope.flags is not a file'):
    acc.case_config('resnet50_f32', recipe=tmp_path / 'nope.flags')


def test_bad_command_line_is_one_line():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  for args, msg in ((['--cases=resnet99'], "error: --cases: unknown 'resnet99'"),
                    (['--batches=a,b'], 'error: --batches=a,b: must be integers')):
    p = subprocess.run([sys.executable, '-m', 'benchmarks.accelerator', *args], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=100)
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [p.stderr.strip().splitlines()[0]]
    assert p.stderr.startswith(msg), p.stderr
