r"""The full 2DASL training step on an accelerator: sample pairs per second over a batch sweep.

  python -m benchmarks.accelerator [--json OUT.json] [--budget_s 420]
      [--cases resnet50_f32,resnet50_bf16,mobilenet_f32]
      [--batches B1,B2,...] [--noinference] [--smoke]

Prepared for a GPU machine lent for a few minutes (issue 15); the exact device
command is ``benchmarks/accelerator.sh`` (benchmarks/README.md, "On an
accelerator"). It runs on a CPU too: ``--smoke`` (the tiny ResNet-18 at batches
2 and 4, about 3.5 minutes on the shared 2-core machine, mostly compiling), and
the tests run it on an even smaller network.

What it measures, per case (network x activation dtype) and per batch:

* the step is exactly what ``experiments.train`` runs: ``loop.build_step`` and
  ``loop.init_state`` on ``FakeData`` (random crops, labels consistent with the
  morphable model), both data paths, all five loss terms and the critic update;
  ResNet-50 4-channel with the paper recipe's losses and optimiser
  (``experiments/configs/2dasl_300wlp.flags``), in float32 and with
  ``--config.model.compute_dtype=bfloat16``, and the default MobileNetV1 x0.5;
* a *sample pair* is one 3D-annotated crop plus one in-the-wild crop: a step
  with batch B per path (``batch_size_3d = batch_size_wild = B``) trains on B
  pairs (2B crops; the wild crops pass through the network twice but count once),
  so pairs/s = B / step seconds;
* ``pairs_per_s``: steps fed as the training loop feeds them (host numpy batches
  through ``CompiledStep.put_batch`` every step, one step in flight), with the
  batches prepared beforehand, so a data pipeline's own cost is not in it;
  ``pairs_per_s_device_batches``: the same executable on batches already on the
  device (the step's own ceiling);
* lowering and compile seconds, XLA's FLOP count and memory analysis of the
  executable, achieved TFLOP/s, the device's memory statistics.

Batches double until the device runs out of memory (the RESOURCE_EXHAUSTED error
is caught and recorded, and the case stops there), the list ends, or the next
point would not fit the case's share of ``--budget_s``. A watchdog ends the
process at ``--budget_s`` whatever it is doing (a compile cannot be interrupted
otherwise), and the JSON is rewritten after every measurement, so a run cut
short still leaves everything measured until then.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / 'experiments' / 'configs' / '2dasl_300wlp.flags'
AIM_PAIRS_PER_S = 10_000  # issue 15: one H100-class GPU
PAIR = ('one 3D-annotated crop + one in-the-wild crop; a step at batch B per path trains on '
        'B pairs (2B crops, the wild ones passing the network twice): pairs/s = B / step s')

# base: 'recipe' (the paper's flagfile over default_config), 'default' (default_config:
# MobileNetV1 x0.5), 'tiny' (benchmarks.train's ResNet-18 width 8, for --smoke).
# weight: the case's share of the time budget; batches: per path, tried in increasing
# order. Each point costs a compile (tens of seconds on a GPU), so a sweep starts where
# the device is busy: below ~256 per path a ResNet-50 step leaves an H100-class GPU
# idle, and MobileNet x0.5 needs several times more.
_RESNET_BATCHES = (256, 512, 1024, 2048, 4096, 8192, 16384)
_MOBILENET_BATCHES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
CASES = {
    'resnet50_f32': dict(base='recipe', dtype='float32', weight=0.35, batches=_RESNET_BATCHES),
    'resnet50_bf16': dict(base='recipe', dtype='bfloat16', weight=0.35,
                          batches=_RESNET_BATCHES),
    'mobilenet_f32': dict(base='default', dtype='float32', weight=0.2,
                          batches=_MOBILENET_BATCHES),
    'mobilenet_bf16': dict(base='default', dtype='bfloat16', weight=0.2,
                           batches=_MOBILENET_BATCHES),
    'tiny_f32': dict(base='tiny', dtype='float32', weight=0.4, batches=(2, 4)),
    'tiny_bf16': dict(base='tiny', dtype='bfloat16', weight=0.4, batches=(2, 4)),
}
DEFAULT_CASES = ('resnet50_f32', 'resnet50_bf16', 'mobilenet_f32')
INFERENCE_WEIGHT = 0.1  # benchmarks.run's inference part, at the end
# The tiny network is the smallest the model factory builds; its step still takes a
# minute or more to compile on a loaded 2-core CPU, hence the budget.
SMOKE = dict(cases=('tiny_f32', 'tiny_bf16'), budget_s=400.0, time_per_point_s=0.2,
             inference=False)

flags.DEFINE_string('json', None, 'Write results here as JSON (rewritten after each point).')
flags.DEFINE_float('budget_s', 420.0, 'Wall-time budget of the whole process in seconds; '
                   'a watchdog ends it there.')
flags.DEFINE_list('cases', list(DEFAULT_CASES), f'Cases to run, in order, of {list(CASES)}.')
flags.DEFINE_list('batches', None, 'Batch sizes per path (3D and wild each) for every '
                  "case, tried in increasing order (default: each case's own list: ResNet "
                  f'{",".join(map(str, _RESNET_BATCHES))}; MobileNet '
                  f'{",".join(map(str, _MOBILENET_BATCHES))}).')
flags.DEFINE_float('time_per_point_s', 1.5, 'Timed seconds per batch point and feeding mode.')
flags.DEFINE_string('recipe', str(RECIPE), "Flagfile whose --config.* lines make the 'recipe' "
                    'cases (losses, optimiser, network).')
flags.DEFINE_bool('inference', True, "Then benchmarks.run's inference part (batch 1 and "
                  '128) in a subprocess, if at least 45 s of the budget are left.')
flags.DEFINE_bool('smoke', False, 'CPU check: the tiny network (ResNet-18 width 8) in '
                  'float32 and bfloat16 at batches 2 and 4, no inference, 400 s budget '
                  '(flags given explicitly still win).')
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------
# Configurations

def case_config(name, recipe=RECIPE):
  """The training config of case ``name`` (batch sizes are set per point)."""
  from dasl_jax.errors import DaslError
  from dasl_jax.training.config import check_config, config_from_args, default_config
  if name not in CASES:
    raise DaslError(f'--cases: unknown {name!r}; use some of {list(CASES)}')
  case = CASES[name]
  if case['base'] == 'recipe':
    if not Path(recipe).is_file():
      raise DaslError(f'--recipe: {recipe} is not a file')
    # The same parser as experiments.train --flagfile=RECIPE.
    config = config_from_args([f'--flagfile={recipe}'])
  elif case['base'] == 'tiny':
    from benchmarks import train as train_bench
    config = train_bench._config(train_bench.CONFIGS['tiny'], l3d_only=False)
  else:
    config = default_config()
  config.model.compute_dtype = case['dtype']
  config.train.progress = False
  check_config(config)
  return config


# ----------------------------------------------------------------------------
# Device facts

def device_info():
  """Devices, platform and kind, memory (where the backend reports it), JAX's own
  environment report (versions and, on NVIDIA, nvidia-smi), and the settings that
  change speed or memory."""
  import jax
  devs = jax.devices()
  info = {'backend': jax.default_backend(), 'devices': [str(d) for d in devs],
          'device_count': len(devs), 'platform': devs[0].platform,
          'device_kind': devs[0].device_kind,
          # float32 matrix products may run as TF32 on NVIDIA GPUs unless this says otherwise
          'default_matmul_precision': str(getattr(jax.config, 'jax_default_matmul_precision',
                                                  'unknown')),
          'env': {k: os.environ[k] for k in (
              'XLA_FLAGS', 'XLA_PYTHON_CLIENT_MEM_FRACTION', 'XLA_PYTHON_CLIENT_PREALLOCATE',
              'XLA_PYTHON_CLIENT_ALLOCATOR', 'JAX_PLATFORMS', 'DASL_ASSETS') if k in os.environ}}
  stats = memory_stats()
  if stats:
    info['memory_stats_at_start'] = stats
    if 'bytes_limit' in stats:
      info['memory_gib'] = stats['bytes_limit'] / 2**30
  try:
    info['environment'] = jax.print_environment_info(return_string=True)
  except Exception as e:  # a report, not a requirement
    info['environment'] = f'unavailable: {e!r}'
  return info


def memory_stats():
  """The first device's allocator statistics (GPU/TPU; None on CPU)."""
  import jax
  try:
    s = jax.devices()[0].memory_stats()
  except Exception:
    return None
  if not s:
    return None
  keep = ('bytes_limit', 'bytes_in_use', 'peak_bytes_in_use', 'largest_alloc_size',
          'bytes_reserved', 'peak_bytes_reserved', 'num_allocs')
  return {k: int(s[k]) for k in keep if k in s}


def is_oom(e):
  """True for the device running out of memory (XLA's RESOURCE_EXHAUSTED)."""
  import jax
  if isinstance(e, MemoryError):
    return True
  runtime = getattr(jax.errors, 'JaxRuntimeError', RuntimeError)
  msg = str(e)
  return isinstance(e, runtime) and ('RESOURCE_EXHAUSTED' in msg or 'out of memory' in msg.lower())


# ----------------------------------------------------------------------------
# Measurement

class Case:
  """One network x dtype: its step (built once) and the state carried from point to point
  (the state's shapes do not depend on the batch)."""

  def __init__(self, name, config, module=None):
    from dasl_jax.training import loop
    from dasl_jax.training.fake_data import FakeData
    self.name, self.config = name, config
    t0 = time.perf_counter()
    data = FakeData(seed=0)
    self.model_source = data.model.name
    self.bundle = loop.build_step(config, data, module=module)
    self.state, self.consts, self.key = loop.init_state(config, self.bundle, data)
    self.init_s = time.perf_counter() - t0


def _cost_flops(exe):
  try:
    cost = exe.cost_analysis()
  except Exception:
    return None
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else None
  f = (cost or {}).get('flops')
  return float(f) if f and f > 0 else None


def _memory_analysis(exe):
  try:
    m = exe.memory_analysis()
  except Exception:
    return None
  if m is None:
    return None
  return {k: int(getattr(m, k)) for k in (
      'temp_size_in_bytes', 'argument_size_in_bytes', 'output_size_in_bytes',
      'alias_size_in_bytes', 'generated_code_size_in_bytes') if hasattr(m, k)}


def measure_point(case, batch, time_per_point_s):
  """Compile the step for ``batch`` per path and time it both ways (module docstring).

  Raises whatever the step raises (the sweep sorts out-of-memory from the rest).
  """
  import jax
  import numpy as np
  from dasl_jax.training import step as step_lib
  from dasl_jax.training.fake_data import FakeData
  data = FakeData(seed=0, batch_3d=batch, batch_wild=batch)
  b3, bw = data.next()
  compiled = case.bundle.compiled
  out = {'batch_per_path': batch, 'pairs_per_step': batch, 'crops_per_step': 2 * batch}
  t0 = time.perf_counter()
  lowered = compiled.lower(case.state, b3, bw, case.key, case.consts)
  out['lower_s'] = time.perf_counter() - t0
  t0 = time.perf_counter()
  exe = lowered.compile()
  out['compile_s'] = time.perf_counter() - t0
  out['flops_per_step'] = _cost_flops(exe)
  out['memory_analysis'] = _memory_analysis(exe)
  d3 = compiled.put_batch(b3, step_lib.BATCH_KEYS_3D)
  dw = compiled.put_batch(bw, step_lib.BATCH_KEYS_WILD)

  def run(n, feed):
    """n steps dispatched back to back; feed 'host' passes the numpy batches (put on the
    device inside each step call, as CompiledStep.__call__ does) and waits for the step
    before last, as the training loop does; 'device' passes the placed batches."""
    in_flight = None
    t0 = time.perf_counter()
    for _ in range(n):
      if feed == 'host':
        a3 = compiled.put_batch(b3, step_lib.BATCH_KEYS_3D)
        aw = compiled.put_batch(bw, step_lib.BATCH_KEYS_WILD)
      else:
        a3, aw = d3, dw
      case.state, metrics = exe(case.state, a3, aw, case.key, case.consts)
      if feed == 'host' and in_flight is not None:
        jax.block_until_ready(in_flight)
      in_flight = metrics
    jax.block_until_ready(in_flight)
    return (time.perf_counter() - t0) / n, in_flight

  # Warm-up: the first run allocates the step's buffers (and is where a too-large batch
  # fails); the second gives the step time that sizes the timed runs.
  t0 = time.perf_counter()
  run(1, 'device')
  out['first_step_s'] = time.perf_counter() - t0
  warm, _ = run(1, 'device')
  n = int(min(max(math.ceil(time_per_point_s / max(warm, 1e-6)), 3), 500))
  out['steps_timed'] = n
  device_s, _ = run(n, 'device')
  host_s, metrics = run(n, 'host')
  total = float(jax.device_get(metrics['total']))
  out['loss_total_last'] = total if np.isfinite(total) else str(total)
  out['step_ms'] = host_s * 1e3
  out['step_ms_device_batches'] = device_s * 1e3
  out['pairs_per_s'] = batch / host_s
  out['pairs_per_s_device_batches'] = batch / device_s
  out['crops_per_s'] = 2 * batch / host_s
  out['ratio_to_aim'] = out['pairs_per_s'] / AIM_PAIRS_PER_S
  if out['flops_per_step']:
    out['tflop_per_s'] = out['flops_per_step'] / device_s / 1e12
  out['device_memory_after'] = memory_stats()
  return out


def sweep(name, batches, deadline, record, measure, time_per_point_s):
  """Points of one case in increasing batch until out of memory, an error, the list's
  end, or a point that would not end before ``deadline`` (perf_counter seconds).

  ``record(points, status)`` is called after each point; ``measure(batch)`` is
  :func:`measure_point` bound to the case (a test passes its own). Returns the status.
  """
  points, status = [], {'stopped_by': 'list end'}
  last = None
  for b in sorted(batches):
    left = deadline - time.perf_counter()
    if last is not None:
      # The next point: a compile like the last one's (it grows a little with the batch)
      # and about twice the last step time for each timed run.
      est = 1.3 * (last['lower_s'] + last['compile_s']) + 2.5 * time_per_point_s \
          + 8 * last['step_ms'] / 1e3
      if est > left:
        status = {'stopped_by': 'budget', 'next_batch': b, 'estimated_s': est, 'left_s': left}
        break
    elif left <= 0:
      status = {'stopped_by': 'budget', 'next_batch': b, 'left_s': left}
      break
    t0 = time.perf_counter()
    try:
      p = measure(b)
    except Exception as e:  # noqa: BLE001 -- sorted below, recorded either way
      msg = ' '.join(str(e).split())[:500]
      kind = 'out_of_memory' if is_oom(e) else 'error'
      points.append({'batch_per_path': b, kind: msg, 'seconds': time.perf_counter() - t0})
      status = {'stopped_by': kind, 'batch_per_path': b}
      print(f'{name} batch {b}: {kind}: {msg[:200]}', flush=True)
      if kind == 'error':
        traceback.print_exc()
      record(points, status)
      break
    p['seconds'] = time.perf_counter() - t0
    points.append(p)
    last = p
    print(f"{name} batch {b:6d}/path: {p['pairs_per_s']:9.1f} pairs/s "
          f"({p['step_ms']:8.2f} ms/step; on-device batches {p['pairs_per_s_device_batches']:9.1f}"
          f" pairs/s), compile {p['compile_s']:5.1f} s"
          + (f", {p['tflop_per_s']:6.1f} TFLOP/s" if p.get('tflop_per_s') else '')
          + f", {p['pairs_per_s'] / AIM_PAIRS_PER_S:.3f}x the aim", flush=True)
    record(points, status)
  record(points, status)
  return status


def summarize(points, status):
  ok = [p for p in points if 'pairs_per_s' in p]
  s = {'stopped_by': status.get('stopped_by')}
  if ok:
    best = max(ok, key=lambda p: p['pairs_per_s'])
    s.update(best_batch_per_path=best['batch_per_path'], best_pairs_per_s=best['pairs_per_s'],
             best_pairs_per_s_device_batches=max(p['pairs_per_s_device_batches'] for p in ok),
             best_ratio_to_aim=best['pairs_per_s'] / AIM_PAIRS_PER_S,
             largest_batch_run=max(p['batch_per_path'] for p in ok))
  oom = [p['batch_per_path'] for p in points if 'out_of_memory' in p]
  if oom:
    s['out_of_memory_at_batch'] = oom[0]
  return s


# ----------------------------------------------------------------------------
# Output

class Recorder:
  """The result dict and its JSON file, shared with the watchdog thread (a lock, and an
  atomic rename, so the file is whole whenever the process ends)."""

  def __init__(self, path, header):
    self.path, self.header = path, header
    self.result = {}
    self.lock = threading.Lock()

  def update(self, fn=None):
    with self.lock:
      if fn is not None:
        fn(self.result)
      self._write()

  def _write(self):
    if not self.path:
      return
    import json
    from dasl_jax.io.files import write_text_atomic
    path = Path(self.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(dict(self.header, **self.result), indent=1,
                                       default=str) + '\n')


def start_watchdog(recorder, at_s, t_start):
  """End the process at ``t_start + at_s`` even inside a compile (XLA holds the main
  thread; a signal handler would wait for it)."""
  def fire():
    # The main thread changes the result only under the lock, so this write sees a
    # whole one; whatever happens here, the process ends.
    got = recorder.lock.acquire(timeout=5)
    try:
      recorder.result['stopped_by_watchdog'] = True
      recorder.result['elapsed_s'] = time.perf_counter() - t_start
      recorder._write()
    except Exception as e:  # noqa: BLE001
      print(f'watchdog: could not write the JSON: {e!r}', flush=True)
    finally:
      if got:
        recorder.lock.release()
    print(f'watchdog: budget of {at_s:.0f} s reached, stopping (results so far are in the '
          'JSON)', flush=True)
    os._exit(3)
  timer = threading.Timer(max(at_s - (time.perf_counter() - t_start), 0.0), fire)
  timer.daemon = True
  timer.start()
  return timer


def run_inference_part(json_path, timeout_s):
  """benchmarks.run's inference part (jitted, exported, bf16 dots; batch 1 and 128) in its
  own process, so its flags stay its own and a hang is cut at ``timeout_s``. The sweep's
  process keeps its preallocated device memory, so this one allocates as it goes."""
  cmd = [sys.executable, '-m', 'benchmarks.run', '--parts=inference', '--notorch',
         '--rounds=3']
  if json_path:
    cmd.append(f'--json={json_path}')
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')
  t0 = time.perf_counter()
  try:
    p = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout_s)
    rc = p.returncode
  except subprocess.TimeoutExpired:
    rc = 'timeout'
  out = {'command': ' '.join(cmd), 'returncode': rc, 'seconds': time.perf_counter() - t0}
  if json_path and rc == 0:
    import json
    out['result'] = json.loads(Path(json_path).read_text()).get('inference')
  return out


# ----------------------------------------------------------------------------

def _batch_list(batches, flag='--batches'):
  from dasl_jax.errors import DaslError
  try:
    out = sorted({int(b) for b in batches})
  except ValueError:
    raise DaslError(f'{flag}={",".join(map(str, batches))}: must be integers') from None
  if not out or out[0] < 1:
    raise DaslError(f'{flag}: must be positive integers, got {list(batches)}')
  return out


def run(cases, budget_s, time_per_point_s, batches=None, json_path=None, inference=True,
        recipe=RECIPE, measure=None, module=None, t_start=None):
  """The whole benchmark; returns the result dict (also written to ``json_path``).

  ``batches``: one list for every case (None: each case's own). ``measure(case name,
  batch)`` replaces the real measurement and ``module`` the configured network (tests).
  """
  from benchmarks import common
  from dasl_jax.errors import DaslError
  t_start = time.perf_counter() if t_start is None else t_start
  if budget_s <= 0:
    raise DaslError(f'--budget_s={budget_s}: must be a positive number of seconds')
  if batches is not None:
    batches = _batch_list(batches)
  configs = {name: case_config(name, recipe) for name in cases}  # bad input fails before JAX
  packages = common.DEFAULT_PACKAGES + ('jax-cuda13-plugin', 'jax-cuda13-pjrt',
                                        'jax-cuda12-plugin', 'ml-collections')
  rec = Recorder(json_path, common.header(packages))
  info = device_info()
  print(f"device: {info['device_kind']} ({info['platform']}, {info['device_count']} "
        f"device(s){', %.1f GiB' % info['memory_gib'] if 'memory_gib' in info else ''}); "
        f"{common.versions(('jax', 'jaxlib', 'flax'))}", flush=True)
  rec.update(lambda r: r.update(
      benchmark='accelerator', aim_pairs_per_s=AIM_PAIRS_PER_S, pair=PAIR, device=info,
      budget_s=budget_s, time_per_point_s=time_per_point_s,
      cases={}, summary={}, finished=False))
  watchdog = start_watchdog(rec, budget_s, t_start)
  # Plan to end a little before the watchdog: the last JSON write and the exit.
  plan_end = t_start + budget_s - min(30.0, 0.1 * budget_s)
  weights = [CASES[n]['weight'] for n in cases] + ([INFERENCE_WEIGHT] if inference else [])
  total_w, cum = sum(weights), 0.0
  try:
    for name in cases:
      cum += CASES[name]['weight']
      # A case may use what earlier cases left: deadlines are cumulative shares.
      deadline = t_start + (plan_end - t_start) * cum / total_w
      config = configs[name]
      entry = {'network': (f'resnet{config.model.depth} width {config.model.resnet_width}'
                           if config.model.arch == 'resnet' else
                           f'mobilenet x{config.model.width}') + f', {config.model.in_channels} ch',
               'compute_dtype': config.model.compute_dtype,
               'batches': batches or list(CASES[name]['batches']),
               'config': {k: config[k].to_dict() for k in ('model', 'loss', 'optim', 'critic')},
               'points': []}
      rec.update(lambda r: r['cases'].__setitem__(name, entry))
      if time.perf_counter() >= deadline:
        rec.update(lambda r: entry.__setitem__('skipped', 'no budget left'))
        continue
      if measure is None:
        try:
          case = Case(name, config, module)
        except Exception as e:  # noqa: BLE001 -- recorded; the other cases still run
          traceback.print_exc()
          rec.update(lambda r: entry.__setitem__('error', ' '.join(str(e).split())[:500]))
          continue
        rec.update(lambda r: entry.update(init_s=case.init_s, model_source=case.model_source))
        measure_fn = lambda b, case=case: measure_point(case, b, time_per_point_s)
      else:
        measure_fn = lambda b, name=name: measure(name, b)

      def record(points, status, entry=entry, name=name):
        rec.update(lambda r: (entry.update(points=list(points), status=status),
                              r['summary'].__setitem__(name, summarize(points, status))))
      sweep(name, entry['batches'], deadline, record, measure_fn, time_per_point_s)
      case = measure_fn = None  # free the case's device memory before the next one
      import gc
      gc.collect()
    if inference:
      left = plan_end - time.perf_counter()
      if left >= 45:
        part_json = (str(Path(json_path).with_name(Path(json_path).stem + '_inference.json'))
                     if json_path else None)
        res = run_inference_part(part_json, left)
      else:
        res = {'skipped': f'{left:.0f} s left, under 45 s'}
      rec.update(lambda r: r.__setitem__('benchmarks_run_inference', res))
    summ = rec.result['summary']
    ok = {k: v for k, v in summ.items() if 'best_pairs_per_s' in v}
    best = max(ok.items(), key=lambda kv: kv[1]['best_pairs_per_s']) if ok else None
    rec.update(lambda r: r.update(
        best=({'case': best[0], **best[1]} if best else None),
        elapsed_s=time.perf_counter() - t_start, finished=True))
  finally:
    watchdog.cancel()
  print(f"total {rec.result.get('elapsed_s', time.perf_counter() - t_start):.0f} s", flush=True)
  # Every point again as one short table last: the device tool returns the output's end.
  print(f"{'case':15s} {'batch':>6s} {'pairs/s':>9s} {'on-dev':>9s} {'ms/step':>8s} "
        f"{'compile':>7s} {'TFLOP/s':>7s} {'x aim':>6s}")
  for k, c in rec.result['cases'].items():
    for p in c.get('points', []):
      if 'pairs_per_s' in p:
        print(f"{k:15s} {p['batch_per_path']:6d} {p['pairs_per_s']:9.1f} "
              f"{p['pairs_per_s_device_batches']:9.1f} {p['step_ms']:8.2f} "
              f"{p['compile_s']:7.1f} {p.get('tflop_per_s') or 0:7.1f} "
              f"{p['pairs_per_s'] / AIM_PAIRS_PER_S:6.3f}")
      else:
        what = 'out_of_memory' if 'out_of_memory' in p else 'error'
        print(f"{k:15s} {p['batch_per_path']:6d} {what}")
  for k, v in rec.result['summary'].items():
    if 'best_pairs_per_s' in v:
      print(f"{k}: best {v['best_pairs_per_s']:.1f} pairs/s at batch {v['best_batch_per_path']}"
            f"/path ({v['best_ratio_to_aim']:.3f}x the {AIM_PAIRS_PER_S} aim); stopped by "
            f"{v['stopped_by']}", flush=True)
    else:
      print(f"{k}: no point measured; stopped by {v['stopped_by']}", flush=True)
  if json_path:
    print(f'wrote {json_path}')
  return rec.result


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  t_start = time.perf_counter()
  opts = dict(cases=FLAGS.cases, batches=FLAGS.batches, budget_s=FLAGS.budget_s,
              time_per_point_s=FLAGS.time_per_point_s, inference=FLAGS.inference)
  if FLAGS.smoke:  # its settings, except those given on the command line
    for k, v in SMOKE.items():
      if not FLAGS[k].present:
        opts[k] = v
  run(json_path=FLAGS.json, recipe=FLAGS.recipe, t_start=t_start, **opts)


def main(argv):
  from dasl_jax import cli
  return cli.command(_main)(argv)


if __name__ == '__main__':
  from dasl_jax import cli
  app.run(main, flags_parser=cli.parse_flags)
