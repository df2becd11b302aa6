"""Probe: MobileNetV1 training step, JAX vs PyTorch, interleaved A/B medians.

  python -m benchmarks.probes.mb_train_ab [--width 0.5] [--batch 32] [--rounds 8]
      [--impls shifted,fast,fast:dw,fast:dw+pw+stem,fast#DOT] [--tune_malloc]
      [--torch_threads 1] [--no_torch]

'shifted'/'grouped': the project's MobileNetV1; 'fast[:parts]': the probe model with the
dasl_jax.models.layers ops; '#DOT': compiled with only dots in XLA's YNN library fusion.
Prints per variant: ms/step, img/s, minor page faults and CPU user/sys time per step.
"""
import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dasl_jax.models.mobilenet import MobileNetV1


def jax_step_fn(module, batch, in_ch=4, compiler_options=None):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, 120, 120, in_ch)).astype(np.float32))
  t = jnp.asarray(rng.normal(size=(batch, 62)).astype(np.float32))
  w = jnp.asarray(rng.uniform(size=(batch, 62)).astype(np.float32))
  variables = jax.jit(lambda k: module.init(k, x[:1]))(jax.random.key(0, impl='rbg'))
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

  f = jax.jit(step, donate_argnums=(0,), compiler_options=compiler_options)
  t0 = time.perf_counter()
  state, loss = f(state, x, t, w)
  loss.block_until_ready()
  compile_s = time.perf_counter() - t0
  box = [state]

  def call():
    box[0], l = f(box[0], x, t, w)
    l.block_until_ready()

  return call, compile_s, f


def make_module(impl, width):
  """'shifted' / 'grouped' (the project's MobileNetV1), 'shifted_flaxbn' (shifted with
  nn.BatchNorm + nn.relu instead of layers.BatchNorm) or 'fast[:dw+pw+stem]' (probe model)."""
  from benchmarks.probes.fast_mobilenet import MobileNetV1Fast
  if impl == 'shifted_flaxbn':
    return MobileNetV1(width, depthwise='shifted', fused_bn=False)
  if impl.startswith('resnet50'):  # 'resnet50' / 'resnet50_flaxbn': the project's ResNet-50
    from dasl_jax.models.resnet import ResNet
    return ResNet(50, fused_bn=not impl.endswith('_flaxbn'))
  if impl.startswith('fast'):
    parts = impl.split(':')[1].split('+') if ':' in impl else ['dw', 'pw', 'stem']
    return MobileNetV1Fast(width, fast=frozenset(parts))
  return MobileNetV1(width, depthwise=impl)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--width', type=float, default=0.5)
  ap.add_argument('--batch', type=int, default=32)
  ap.add_argument('--rounds', type=int, default=8)
  ap.add_argument('--impls', default='shifted')
  ap.add_argument('--no_torch', action='store_true')
  ap.add_argument('--tune_malloc', action='store_true')
  ap.add_argument('--torch_threads', type=int, default=2)
  a = ap.parse_args()
  if a.tune_malloc:
    from dasl_jax import cpu_runtime
    print('tune_malloc', cpu_runtime.tune_malloc())
  fns = {}
  for impl in a.impls.split(','):
    opts = None
    if '#' in impl:  # fast#DOT: only dots go to the YNN library fusion
      impl, o = impl.split('#')
      opts = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_' + o}
    call, c, _ = jax_step_fn(make_module(impl, a.width), a.batch, compiler_options=opts)
    impl = (impl + '#' + o) if opts else impl
    print(f'{impl}: compile {c:.1f}s', flush=True)
    fns['jax_' + impl] = call
  if not a.no_torch:
    from benchmarks import torch_reference as tr
    tr.set_threads(a.torch_threads)
    net = tr.mobilenet_v1(a.width, 4)
    step = tr.make_train_step(net)
    x, t, w = tr.train_inputs(a.batch)
    fns['torch'] = lambda: step(x, t, w)
  for f in fns.values():
    f()
  times = {k: [] for k in fns}
  faults = {k: [] for k in fns}
  cpu = {k: [] for k in fns}
  for _ in range(a.rounds):
    for k, f in fns.items():
      r0 = resource.getrusage(resource.RUSAGE_SELF)
      t0 = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t0)
      r1 = resource.getrusage(resource.RUSAGE_SELF)
      faults[k].append(r1.ru_minflt - r0.ru_minflt)
      cpu[k].append((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
  med = {k: float(np.median(v)) for k, v in times.items()}
  for k, m in med.items():
    u, sy = np.median(np.array(cpu[k]), axis=0)
    print(f'{k}: {m*1e3:.1f} ms/step  {a.batch/m:.1f} img/s  minor faults/step '
          f'{int(np.median(faults[k]))}  cpu user {u*1e3:.0f} ms sys {sy*1e3:.0f} ms')
  if 'torch' in med:
    for k in med:
      if k != 'torch':
        print(f'{k}/torch speed ratio: {med["torch"]/med[k]:.3f}')


if __name__ == '__main__':
  main()
