"""Probe: batch-128 inference, one XLA:CPU computation vs the batch split in two.

  python -m benchmarks.probes.infer_split [--batch 128] [--rounds 15] [--devices 2]

Question: does one jitted forward keep both cores busy? Variants, interleaved in
one process (medians of ``--rounds``):

* ``one``: the benchmark's jitted predict function on the whole batch, one device;
* ``mesh``: the same function jitted over ``--devices`` host CPU devices with the
  batch sharded (``--xla_force_host_platform_device_count``);
* ``threads``: two Python threads, each running half the batch through ``one``'s
  function (inter-op parallelism by hand);
* ``torch``: the PyTorch original (2 threads), as in ``benchmarks.inference``.
"""
import argparse
import os
import sys
import threading
import time


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--batch', type=int, default=128)
  ap.add_argument('--rounds', type=int, default=15)
  ap.add_argument('--devices', type=int, default=2)
  ap.add_argument('--notorch', action='store_true')
  a = ap.parse_args()
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={a.devices}')
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  import jax
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as PS
  from benchmarks import inference as BI
  from dasl_jax import predict_batch
  from dasl_jax.models.mobilenet import MobileNetV1

  variables, stats, model, _ = BI.load_model_inputs()
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (a.batch, 120, 120, 3), dtype=np.uint8)
  pts = np.zeros((a.batch, 18, 2), np.float32)
  fn = predict_batch.make_predict_fn(MobileNetV1(0.5), stats, model, 'v2', 3)
  v1 = jax.device_put(variables, jax.devices()[0])
  fns = {'one': lambda: jax.block_until_ready(fn(v1, img, pts)['lms'])}

  mesh = Mesh(np.array(jax.devices()[:a.devices]), ('b',))
  rep, shard = NamedSharding(mesh, PS()), NamedSharding(mesh, PS('b'))
  vm = jax.device_put(variables, rep)
  img_m, pts_m = jax.device_put(img, shard), jax.device_put(pts, shard)
  fns['mesh'] = lambda: jax.block_until_ready(fn(vm, img_m, pts_m)['lms'])

  half = a.batch // 2
  parts = [(img[:half], pts[:half]), (img[half:], pts[half:])]

  def threaded():
    out = [None, None]

    def work(k):
      out[k] = jax.block_until_ready(fn(v1, *parts[k])['lms'])
    ts = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in ts:
      t.start()
    for t in ts:
      t.join()
    return out
  fns['threads'] = threaded

  if not a.notorch:
    try:
      tp = BI.torch_predictor(variables, stats, model)
      fns['torch'] = lambda: tp(img)
    except ImportError:
      pass
  ref = np.asarray(fns['one']())
  np.testing.assert_allclose(np.asarray(fns['mesh']()), ref, atol=1e-3)
  np.testing.assert_allclose(np.concatenate([np.asarray(o) for o in fns['threads']()]), ref,
                             atol=1e-3)
  for f in fns.values():
    f()
  ts = {k: [] for k in fns}
  cpu = {k: [] for k in fns}
  for _ in range(a.rounds):
    for k, f in fns.items():
      c0, t0 = time.process_time(), time.perf_counter()
      f()
      ts[k].append(time.perf_counter() - t0)
      cpu[k].append(time.process_time() - c0)
  med = {k: float(np.median(v)) for k, v in ts.items()}
  print(f'batch {a.batch}, {a.devices} host devices, {os.cpu_count()} CPUs, load '
        f'{os.getloadavg()[0]:.2f}')
  for k, m in med.items():
    rel = f'  ({med["torch"] / m:.2f}x torch)' if 'torch' in med else ''
    print(f'{k:8s} {a.batch / m:7.0f} img/s  cpu/wall {np.median(cpu[k]) / m:.2f}{rel}')
  sys.stdout.flush()


if __name__ == '__main__':
  main()
