"""Training speed on this machine: images/s of the compiled 2DASL step.

  python -m benchmarks.train [--json OUT] [--quick]

For each configuration: the full 2DASL step (3D path, both wild passes,
self-critic and critic update) and an L_3d-only step of the same network and
3D batch, timed in the same run so their ratio is meaningful on a shared,
noisy machine; the first call's time (compilation plus one step); peak
resident memory (``resource.getrusage`` maxrss, whole process, so it only
grows). ``--quick`` runs the tiny configuration only (CI, < 60 s).

Configurations: ``tiny`` (ResNet-18 width 8, 4 + 4 crops: tiny.flags),
``default`` (MobileNetV1 x0.5, 4 channels, 32 + 32), ``resnet50`` (the paper's
ResNet-50, 4 channels, 32 + 32).
"""
from __future__ import annotations

import argparse
import resource
import time

import jax
import ml_collections

from benchmarks import common
from dasl_jax.training.config import default_config
from dasl_jax.models import create_regressor
from dasl_jax.models.critic import SelfCritic
from dasl_jax.training import loop, optimizers
from dasl_jax.training import state as state_lib
from dasl_jax.training import step as step_lib
from dasl_jax.training.fake_data import FakeData

CONFIGS = {
    'tiny': dict(arch='resnet', depth=18, resnet_width=8, batch=4, small_critic=True),
    'default': dict(arch='mobilenet', width=0.5, batch=32),
    'resnet50': dict(arch='resnet', depth=50, resnet_width=64, batch=32),
}
L3D_ONLY = dict(use_2d=False, use_3d_con=False, use_cyc=False, use_sc=False, train_critic=False)


def _config(spec, l3d_only):
  c = default_config()
  c.model.arch = spec['arch']
  for k in ('width', 'depth', 'resnet_width'):
    if k in spec:
      c.model[k] = spec[k]
  if spec.get('small_critic'):
    c.critic.encoder_widths = (8, 16)
    c.critic.latent_dim = 32
    c.critic.hidden = (32, 32)
  c.data.batch_size_3d = c.data.batch_size_wild = spec['batch']
  if l3d_only:
    for k, v in L3D_ONLY.items():
      c.loss[k] = v
  return c


def _maxrss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_step(config, data, repeats):
  """Time one compiled step: first call (compile + run) and the median of ``repeats``."""
  model_cfg = loop.model_config_from(config)
  module = create_regressor(model_cfg)
  critic = SelfCritic(tuple(config.critic.encoder_widths), int(config.critic.latent_dim),
                      tuple(config.critic.hidden))
  tx, schedule = optimizers.regressor_optimizer(config.optim, 1000)
  critic_tx = optimizers.critic_optimizer(config.optim)
  ctx = step_lib.StepContext(
      module=module, critic=critic, tx=tx, critic_tx=critic_tx, schedule=schedule,
      in_channels=model_cfg.in_channels, convention=model_cfg.convention, freeze_bn=False,
      loss=ml_collections.FrozenConfigDict(config.loss), critic_every=1)
  compiled = step_lib.CompiledStep(ctx)
  variables = state_lib.init_variables(module, 0, (120, 120), model_cfg.in_channels)
  state = compiled.put_replicated(state_lib.create_train_state(
      variables, state_lib.init_critic(critic, 1, (120, 120)), tx, critic_tx))
  consts = compiled.put_replicated(step_lib.make_consts(data.model, data.param_stats.mean,
                                                        data.param_stats.std))
  key = compiled.put_replicated(jax.random.PRNGKey(0))
  b3, bw = data.next()
  t0 = time.perf_counter()
  state, m = compiled(state, b3, bw, key, consts)
  jax.block_until_ready(m)
  first = time.perf_counter() - t0
  holder = {'s': state}

  def one():
    holder['s'], out = compiled(holder['s'], b3, bw, key, consts)
    return out
  t = common.time_fn(one, repeats=repeats, warmup=1, block=jax.block_until_ready)
  return {'first_call_s': first, 'step_median_s': t['median_s'], 'step_min_s': t['min_s'],
          'repeats': repeats, 'traces': compiled.traces}


def run(names, repeats):
  results = {}
  for name in names:
    spec = CONFIGS[name]
    data = FakeData(seed=0, batch_3d=spec['batch'], batch_wild=spec['batch'])
    full = bench_step(_config(spec, False), data, repeats)
    only = bench_step(_config(spec, True), data, repeats)
    b = spec['batch']
    r = {'network': (f"resnet{spec['depth']} width {spec['resnet_width']}"
                     if spec['arch'] == 'resnet' else f"mobilenet x{spec['width']}") + ', 4 ch',
         'batch_3d': b, 'batch_wild': b,
         'full_step': full, 'l3d_only_step': only,
         # Images through the step: both streams for the full step (the wild
         # crops run twice but count once), the 3D batch for L_3d only.
         'full_images_per_s': 2 * b / full['step_median_s'],
         'l3d_only_images_per_s': b / only['step_median_s'],
         'full_over_l3d_only_step_time': full['step_median_s'] / only['step_median_s'],
         'maxrss_mb_after': _maxrss_mb()}
    results[name] = r
    print(f"{name:9s} {r['network']:28s} full {r['full_images_per_s']:7.1f} img/s "
          f"({full['step_median_s'] * 1e3:8.1f} ms/step, first call {full['first_call_s']:5.1f} s)"
          f" | L3d-only {r['l3d_only_images_per_s']:7.1f} img/s "
          f"({only['step_median_s'] * 1e3:8.1f} ms/step, first {only['first_call_s']:5.1f} s)"
          f" | full/L3d step time {r['full_over_l3d_only_step_time']:.2f}"
          f" | maxrss {r['maxrss_mb_after']:.0f} MB", flush=True)
  return results


def main():
  # Same process set-up as the project's commands (experiments/*): see cpu_runtime.
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--json', help='write results here')
  ap.add_argument('--quick', action='store_true', help='tiny configuration only (CI)')
  ap.add_argument('--configs', default='', help='comma-separated subset of ' + ','.join(CONFIGS))
  ap.add_argument('--repeats', type=int, default=0, help='timed steps per measurement')
  args = ap.parse_args()
  names = (args.configs.split(',') if args.configs else
           ['tiny'] if args.quick else list(CONFIGS))
  t0 = time.perf_counter()
  results = run(names, repeats=args.repeats or (3 if args.quick else 5))
  out = {'benchmark': 'train', 'results': results,
         'seconds': time.perf_counter() - t0, 'load_average': list(__import__('os').getloadavg())}
  print(f"total {out['seconds']:.1f} s; load average {out['load_average']}")
  if args.json:
    common.write_json(out, args.json)


if __name__ == '__main__':
  main()
