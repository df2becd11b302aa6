r"""The speed benchmark: training and inference throughput, against PyTorch where installed.

  python -m benchmarks.run [--json OUT.json] [--quick] [--no_tune_malloc] [--cpus N]
                           [--parts train_2dasl,train_supervised,inference]

Measured in one process, so the ratios are comparable on a shared machine
(JAX and PyTorch runs of the same setting alternate, A B A B ..., medians):

* training images/s of the full 2DASL step (``dasl_jax.training``: both data
  paths, critic; fake data) and of an L_3d-only step, default network
  (MobileNetV1 x0.5, 4 channels); a crop counts once per step however many
  passes it makes;
* a supervised step (weighted MSE on the 62 outputs, SGD Nesterov 0.9, weight
  decay 5e-4) for MobileNetV1 x0.5 and x1.0 and ResNet-50 4-ch: the project's
  network ('jax'), the same with Flax's BatchNorm instead of the custom-VJP
  ``layers.BatchNorm`` ('jax_flax_bn', the before of that change), and the
  PyTorch version of the same network and step (``benchmarks.torch_reference``);
* inference: ms at batch 1 and images/s at batch 128 of the jitted inference
  function (``dasl_jax.inference.export.inference_function``), of the same with bfloat16
  operands in the matrix products (``dot_dtype``, an option), of the exported
  artefact (``export_model`` -> ``save`` -> ``load``), and PyTorch eager;
* compile times and the peak resident memory (maxrss).

``--quick`` (CI): batch 8, MobileNetV1 x0.5 only, two timed rounds. By
default ``dasl_jax.cpu_runtime.tune_malloc()`` runs first (it removes the
per-step page faults of XLA:CPU's temp buffers); ``--no_tune_malloc`` measures
glibc's default behaviour. PyTorch runs with as many threads as usable CPUs
(``--cpus N`` pins the process to N CPUs first: on a loaded machine
``--cpus 1`` gives the fairest comparison, see benchmarks/README.md).
"""
from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from typing import Callable, Dict

from absl import app, flags

PARTS = ('train_2dasl', 'train_supervised', 'inference')

flags.DEFINE_string('json', None, 'Write results here as JSON.')
flags.DEFINE_bool('quick', False, 'Small CI run: batch 8, MobileNetV1 x0.5 only, 2 rounds.')
flags.DEFINE_integer('rounds', 6, 'Timed rounds per setting (each runs every contender once).')
flags.DEFINE_bool('torch', True, 'Include PyTorch where installed.')
flags.DEFINE_bool('tune_malloc', True, 'Call dasl_jax.cpu_runtime.tune_malloc() first.')
flags.DEFINE_integer('cpus', 0, 'Pin the process to the first N usable CPUs (0: all).')
flags.DEFINE_bool('resnet', True, 'Include ResNet-50 (skipped with --quick).')
flags.DEFINE_list('parts', list(PARTS), f'Which parts to run, of {PARTS}.')
flags.DEFINE_bool('torch_own_process', True, 'Also time each PyTorch training step in a fresh '
                  'process with the default allocator (benchmarks/torch_own_process.py).')
FLAGS = flags.FLAGS


def _interleave(fns: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, dict]:
  """Run each fn once (warm-up), then ``rounds`` times in turn.

  Per fn: median and min seconds, and the median minor page faults and CPU
  seconds (user, system) of the process during one call.
  """
  import numpy as np
  for f in fns.values():
    f()
  times = {k: [] for k in fns}
  faults = {k: [] for k in fns}
  cpu = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      r0 = resource.getrusage(resource.RUSAGE_SELF)
      t0 = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t0)
      r1 = resource.getrusage(resource.RUSAGE_SELF)
      faults[k].append(r1.ru_minflt - r0.ru_minflt)
      cpu[k].append((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
  return {k: {'median_s': float(np.median(v)), 'min_s': float(np.min(v)), 'rounds': rounds,
              'minor_faults': int(np.median(faults[k])),
              'cpu_user_s': float(np.median([c[0] for c in cpu[k]])),
              'cpu_sys_s': float(np.median([c[1] for c in cpu[k]]))}
          for k, v in times.items()}


def _torch_own_process(arch, width, batch, rounds, threads):
  """PyTorch's step timed in a fresh interpreter (no tune_malloc), after the
  interleaved rounds: PyTorch as users run it."""
  import json
  import subprocess
  import sys
  cmd = [sys.executable, '-m', 'benchmarks.torch_own_process', f'--arch={arch}',
         f'--width={width}', f'--batch={batch}', f'--rounds={rounds}', f'--threads={threads}']
  r = subprocess.run(cmd, capture_output=True, text=True)
  if r.returncode:
    print(f'PyTorch in its own process failed: {r.stderr.strip()[-300:]}', flush=True)
    return None
  return json.loads(r.stdout.strip().splitlines()[-1])


def _have_torch() -> bool:
  try:
    import torch  # noqa: F401
    return True
  except ImportError:
    return False


def supervised_step(module, batch: int, in_channels: int = 4):
  """Jitted supervised step of ``module`` on a random batch.

  Returns (call, compile seconds); ``call()`` runs one step and waits for it.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, 120, 120, in_channels)).astype(np.float32))
  t = jnp.asarray(rng.normal(size=(batch, 62)).astype(np.float32))
  w = jnp.asarray(rng.uniform(size=(batch, 62)).astype(np.float32))
  from dasl_jax.training.state import init_key
  variables = jax.jit(lambda k: module.init(k, x[:1]))(init_key(0))
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.004, 0.9, nesterov=True))
  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))

  def step(state, x, t, w):
    params, bs, opt = state

    def loss_fn(p):
      out, upd = module.apply({'params': p, 'batch_stats': bs}, x, train=True,
                              mutable=['batch_stats'])
      return jnp.mean(w * (out - t) ** 2), upd['batch_stats']

    (loss, nbs), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    u, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, u), nbs, opt), loss

  f = jax.jit(step, donate_argnums=(0,))
  box = [state]

  def call():
    box[0], loss = f(box[0], x, t, w)
    loss.block_until_ready()

  t0 = time.perf_counter()
  call()
  return call, time.perf_counter() - t0


def full_step(batch: int, l3d_only: bool):
  """The project's compiled 2DASL step (loop.build_step on FakeData), default network.

  Returns (call, compile seconds, crops per step).
  """
  import jax
  from dasl_jax.training.config import default_config
  from dasl_jax.training import loop
  from dasl_jax.training.fake_data import FakeData
  config = default_config()
  config.train.progress = False
  if l3d_only:
    for k in ('use_2d', 'use_3d_con', 'use_cyc', 'use_sc', 'train_critic'):
      config.loss[k] = False
  data = FakeData(seed=0, batch_3d=batch, batch_wild=batch)
  bundle = loop.build_step(config, data)
  state, consts, base_key = loop.init_state(config, bundle, data)
  b3, bw = data.next()
  box = [state]

  def call():
    box[0], m = bundle.compiled(box[0], b3, bw, base_key, consts)
    jax.block_until_ready(m['total'])

  t0 = time.perf_counter()
  call()
  return call, time.perf_counter() - t0, batch if l3d_only else 2 * batch


def _network(width, fused_bn):
  """MobileNetV1 at ``width``, or ResNet-50 for ``width=None``; ``fused_bn=False`` is
  the same network with nn.BatchNorm + nn.relu (the before of layers.BatchNorm)."""
  from dasl_jax.models.mobilenet import MobileNetV1
  from dasl_jax.models.resnet import ResNet
  if width is None:
    return ResNet(depth=50, fused_bn=fused_bn)
  return MobileNetV1(width, fused_bn=fused_bn)


def train_networks(quick: bool, rounds: int, with_torch: bool, threads: int, resnet: bool):
  """Supervised-step img/s for each network and batch, JAX vs PyTorch interleaved."""
  settings = [('mobilenet_x0.5', 0.5, 8 if quick else 32)]
  if not quick:
    settings += [('mobilenet_x0.5', 0.5, 128), ('mobilenet_x1.0', 1.0, 32)]
    if resnet:
      settings += [('resnet50', None, 32)]
  out = {}
  for name, width, batch in settings:
    fns, compile_s = {}, {}
    # 'jax' is the project's network; 'jax_flax_bn' the same with Flax's BatchNorm,
    # so each run records the before/after of the fused batch norm.
    for tag, fused in (('jax', True), ('jax_flax_bn', False)):
      fns[tag], compile_s[tag] = supervised_step(_network(width, fused), batch)
    if with_torch:
      from benchmarks import torch_reference as tr
      tr.set_threads(threads)
      net = tr.build('mobilenet' if width is not None else 'resnet50', width or 1.0, 4)
      tstep = tr.make_train_step(net)
      x, t, w = tr.train_inputs(batch)
      fns['torch'] = lambda tstep=tstep, x=x, t=t, w=w: tstep(x, t, w)
    med = _interleave(fns, rounds)
    if with_torch and FLAGS.torch_own_process:
      own = _torch_own_process('mobilenet' if width is not None else 'resnet50', width or 1.0,
                               batch, rounds, threads)
      if own is not None:
        med['torch_own_process'] = own
    r = {'batch': batch, 'compile_s': compile_s}
    for k, m in med.items():
      r[k] = dict(m, img_per_s=batch / m['median_s'])
    if 'torch' in med:
      r['ratio_vs_torch'] = {k: med['torch']['median_s'] / med[k]['median_s']
                             for k in med if not k.startswith('torch')}
    if 'torch_own_process' in med:
      r['ratio_vs_torch_own_process'] = {
          k: med['torch_own_process']['median_s'] / med[k]['median_s']
          for k in med if not k.startswith('torch')}
    key = f'{name}_b{batch}'
    out[key] = r
    line = '  '.join(f'{k} {r[k]["img_per_s"]:.1f} img/s' for k in med)
    ratio = '  '.join(f'{k}/torch {v:.2f}x' for k, v in r.get('ratio_vs_torch', {}).items())
    ratio += ''.join(f'  {k}/torch_own_process {v:.2f}x'
                     for k, v in r.get('ratio_vs_torch_own_process', {}).items())
    print(f'train {key}: {line}  {ratio}', flush=True)
  return out


def train_full(quick: bool, rounds: int):
  """Full 2DASL and L_3d-only steps of the project (default network), interleaved."""
  batch = 8 if quick else 32
  fns, res = {}, {'batch_per_stream': batch}
  crops = {}
  for tag, l3d_only in (('full_2dasl', False), ('l3d_only', True)):
    fns[tag], c, crops[tag] = full_step(batch, l3d_only)
    res[tag] = {'compile_s': c, 'crops_per_step': crops[tag]}
  for k, m in _interleave(fns, rounds).items():
    res[k].update(m, img_per_s=crops[k] / m['median_s'])
    print(f'train {k} (batch {batch} per stream): {res[k]["img_per_s"]:.1f} crops/s '
          f'({m["median_s"] * 1e3:.0f} ms/step, compile {res[k]["compile_s"]:.1f} s, '
          f'{m["minor_faults"]} page faults/step, cpu user {m["cpu_user_s"]:.2f} s '
          f'sys {m["cpu_sys_s"]:.2f} s)', flush=True)
  return res


def inference(quick: bool, rounds: int, with_torch: bool, threads: int):
  """Jitted inference function vs the exported artefact vs PyTorch eager (same weights)."""
  import jax
  import numpy as np
  from dasl_jax.io import checkpoint
  from dasl_jax.inference import export
  from dasl_jax.models import ModelConfig, create_regressor
  from dasl_jax.training.fake_data import FakeData
  from dasl_jax.training.state import init_variables
  cfg = ModelConfig()
  module = create_regressor(cfg)
  data = FakeData(seed=0)
  variables = init_variables(module, 0, (120, 120), cfg.in_channels)
  restored = checkpoint.Restored(module, variables, cfg, data.param_stats, None)
  large = 8 if quick else 128
  rng = np.random.default_rng(0)
  crops = {b: rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8) for b in (1, large)}
  pts = {b: rng.uniform(10, 110, (b, 18, 2)).astype(np.float32) for b in (1, large)}
  fn, _ = export.inference_function(restored, data.model)
  jitted = jax.jit(fn)
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    exp, meta = export.export_model(restored, data.model)
    path = export.save(exp, meta, os.path.join(tmp, 'model.jaxexport'))
    loaded, _ = export.load(path)
    export_s = time.perf_counter() - t0
  exported = jax.jit(loaded.call)
  res = {'large_batch': large, 'export_s': export_s, 'compile_s': {}}
  contenders = {'jax_jit': jitted, 'jax_exported': exported}
  if hasattr(module, 'dot_dtype'):  # the option: bfloat16 operands in the matrix products
    bf16 = checkpoint.with_dot_dtype(restored, 'bfloat16')
    contenders['jax_jit_bf16_dots'] = jax.jit(export.inference_function(bf16, data.model)[0])
  outs = {}
  for tag, f in contenders.items():
    t0 = time.perf_counter()
    outs[tag] = [np.asarray(a) for a in jax.block_until_ready(f(crops[1], pts[1]))]
    res['compile_s'][tag] = time.perf_counter() - t0
  res['max_rel_diff_exported_vs_jit'] = float(max(
      np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
      for a, b in zip(outs['jax_exported'], outs['jax_jit'])))
  if 'jax_jit_bf16_dots' in outs:
    res['max_rel_diff_bf16_dots_vs_jit'] = float(max(
        np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
        for a, b in zip(outs['jax_jit_bf16_dots'], outs['jax_jit'])))
  torch_predict = None
  if with_torch:
    from benchmarks import torch_reference as tr
    tr.set_threads(threads)
    net = tr.mobilenet_v1(cfg.width, cfg.in_channels)
    torch_predict = tr.make_predict(net)
  for b in (1, large):
    fns = {tag: (lambda f=f, b=b: jax.block_until_ready(f(crops[b], pts[b])))
           for tag, f in contenders.items()}
    if torch_predict is not None:
      x4 = np.concatenate([crops[b], np.zeros((b, 120, 120, 1), np.uint8)], axis=-1)
      fns['torch'] = lambda x4=x4: torch_predict(x4)
    for k, m in _interleave(fns, rounds).items():
      r = res.setdefault(k, {})
      r[f'batch{b}'] = m
      if b == 1:
        r['batch1_ms'] = m['median_s'] * 1e3
      else:
        r['large_img_per_s'] = b / m['median_s']
  if torch_predict is not None:
    res['ratio_vs_torch'] = {
        k: {'batch1': res['torch']['batch1_ms'] / res[k]['batch1_ms'],
            'large': res[k]['large_img_per_s'] / res['torch']['large_img_per_s']}
        for k in contenders}
  for k in list(contenders) + (['torch'] if torch_predict is not None else []):
    print(f'inference {k}: batch 1 {res[k]["batch1_ms"]:.2f} ms, batch {large} '
          f'{res[k]["large_img_per_s"]:.0f} img/s', flush=True)
  for k, v in res.get('ratio_vs_torch', {}).items():
    print(f'inference {k}/torch: batch 1 {v["batch1"]:.2f}x, batch {large} {v["large"]:.2f}x')
  return res


def run(quick=False, rounds=6, with_torch=True, tune_malloc=True, cpus=0, resnet=True,
        parts=PARTS):
  """Everything in ``parts``; returns the result dict (without the header)."""
  from dasl_jax.errors import DaslError
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    raise DaslError(f'--parts: unknown {unknown}; use some of {PARTS}')
  if cpus:
    usable = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, usable[:cpus])
  malloc_tuned = False
  if tune_malloc:
    from dasl_jax import cpu_runtime
    malloc_tuned = cpu_runtime.tune_malloc()
  rounds = 2 if quick else rounds
  threads = len(os.sched_getaffinity(0))
  with_torch = with_torch and _have_torch()
  res = {'quick': quick, 'rounds': rounds, 'malloc_tuned': malloc_tuned,
         'usable_cpus': threads, 'torch_threads': threads if with_torch else None,
         'load_average': os.getloadavg()}
  print(f'malloc tuned: {malloc_tuned}; {threads} CPUs; torch: {with_torch}; '
        f'load {res["load_average"][0]:.1f}', flush=True)
  if 'train_2dasl' in parts:
    res['train_2dasl'] = train_full(quick, rounds)
  if 'train_supervised' in parts:
    res['train_supervised'] = train_networks(quick, rounds, with_torch, threads, resnet)
  if 'inference' in parts:
    res['inference'] = inference(quick, rounds, with_torch, threads)
  res['maxrss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f'peak memory (maxrss): {res["maxrss_mb"]:.0f} MB')
  return res


def main(argv):
  del argv
  from benchmarks import common
  common.finish(lambda: run(FLAGS.quick, FLAGS.rounds, FLAGS.torch, FLAGS.tune_malloc,
                            FLAGS.cpus, FLAGS.resnet, tuple(FLAGS.parts)), FLAGS.json)


if __name__ == '__main__':
  app.run(main)
