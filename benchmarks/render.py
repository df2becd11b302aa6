"""Renderer speed: a 38,000-vertex mesh onto a 1280x720 photo, and 120x120 crops.

  python -m benchmarks.render [--json render.json] [--repeats 50]

Prints and writes JSON with the machine, the library versions, the command and
the timings (median and best of ``repeats`` after a warm-up call, which also
compiles the numba kernels). Targets: < 50 ms for the large render (the
inference overlays), > 500 renders/s for the synthetic model's crops.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks import common


def dome_mesh(rows=195, cols=195, width=420.0, centre=(640.0, 360.0)):
  """A face-sized dome on a grid: rows*cols vertices (38,025 by default), about
  2*rows*cols triangles, in image pixels with depth; colours vary smoothly."""
  from dasl_jax.face_model.morphable_model import grid_triangles
  v, u = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing='ij')
  r2 = np.clip(u ** 2 + v ** 2, 0, 1)
  z = np.sqrt(1 - 0.9 * r2) + 0.05 * np.sin(8 * u) * np.cos(6 * v)
  verts = np.stack([centre[0] + u * width / 2, centre[1] + v * width / 2 * 1.2, z * width / 2], -1)
  colors = np.stack([0.8 + 0.1 * u, 0.6 + 0.1 * v, 0.5 + 0.05 * u * v], -1)
  return (verts.reshape(-1, 3).astype(np.float32), grid_triangles(rows, cols),
          colors.reshape(-1, 3).astype(np.float32))


def time_calls(fn, repeats):
  """Median / best / p90 milliseconds of ``fn()`` after warm-up calls (numba compiles there)."""
  t = common.time_fn(fn, repeats=repeats, warmup=2)
  ts = np.array(t['times_s']) * 1e3
  return {'median_ms': float(np.median(ts)), 'best_ms': float(ts.min()),
          'p90_ms': float(np.percentile(ts, 90)), 'repeats': repeats}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--json', default='', help='also write the results here as JSON')
  ap.add_argument('--repeats', type=int, default=50)
  args = ap.parse_args(argv)
  from dasl_jax.viz import render
  from dasl_jax.data import synthetic
  from dasl_jax.face_model import synthetic as synthetic_model

  result = common.header(('numpy', 'numba', 'llvmlite', 'opencv-python-headless', 'scipy'))
  result['numba'] = render.HAVE_NUMBA
  verts, tri, colors = dome_mesh()
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
  big = time_calls(lambda: render.render(verts, tri, colors, 720, 1280, background=photo),
                   args.repeats)
  big.update(vertices=int(len(verts)), triangles=int(len(tri)), size='1280x720')
  result['large_mesh_1280x720'] = big

  model = synthetic_model.build_synthetic_model(0)
  stats = synthetic.sampling_param_stats(model, n=200)
  src = synthetic.SyntheticFaces(model, '3d', 10, 0, stats)
  p = src.sample_params(np.random.default_rng(0))
  v = src._project(p, src.u, src.basis_t, synthetic.RENDER_CONVENTION)
  small = time_calls(lambda: render.render(v, src.triangles, src.colors, 120, 120),
                     args.repeats * 10)
  small.update(vertices=int(len(v)), triangles=int(len(src.triangles)), size='120x120',
               renders_per_s=1e3 / small['median_ms'])
  result['synthetic_crop_120x120'] = small
  # Whole examples (sampling, projection, render, background, blur, noise, labels);
  # CPU time of this process, so other load on the machine does not count.
  n = 300
  src = synthetic.SyntheticFaces(model, '3d', n, 0, stats)
  src[0]
  t_cpu, t_wall = time.process_time(), time.perf_counter()
  for i in range(n):
    src[i]
  result['synthetic_examples_3d'] = {
      'examples': n, 'per_s_cpu_time': n / (time.process_time() - t_cpu),
      'per_s_wall': n / (time.perf_counter() - t_wall)}
  print(json.dumps(result, indent=1))
  if args.json:
    common.write_json(result, args.json)


if __name__ == '__main__':
  main()
