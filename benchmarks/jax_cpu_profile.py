r"""Where XLA:CPU spends the JAX path's time on mb05 (issue 22, item 3): the cost of each
block of the forward at batch 1, the network's 1x1 products on XLA:CPU against numpy's
BLAS, and (``--ffi``) the same forward with those products handed to that BLAS through
an XLA FFI custom call.

  python -m benchmarks.jax_cpu_profile [--json OUT.json] [--rounds 5] [--ffi]

Forms of the forward at batch 1 (real mb05 weights when $DASL_ASSETS has them; uint8
crop -> the 512 pooled features; every program compiled ahead of time; medians over rounds):
  full          as the inference path runs it on the CPU;
  no_depthwise  every depthwise 3x3 replaced by a strided copy: the depthwise share;
  no_pointwise  every 1x1 product replaced by a broadcast: the 1x1 products' share;
  neither       both replaced: the stem, batch norms and the mean.
Then each 1x1 product of that forward (and the stem's patches product) alone: XLA's dot
against numpy's ``a @ b`` on the same operands, in GFLOP/s.
``--ffi`` builds ``benchmarks/native/blas_matmul.cc`` with g++ (the headers come with
jaxlib), passes it numpy's bundled OpenBLAS ``cblas_sgemm``, and times the forward with
batch norm folded into the 1x1 and stem products and each product + shift + ReLU one
custom call, against the XLA forward, at batch 1 and ``--large_batch``. A measurement,
not a package feature: see benchmarks/README.md for what it showed.
"""
from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common

# Flags are defined only when this module runs as a command (--json, --large_batch and
# --repeats by benchmarks.inference, imported there), so tests can import it beside the
# other benchmarks, which define flags of the same names.
FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_integer('rounds', 5, 'Rounds; each times every program (median reported).')
  flags.DEFINE_bool('ffi', False, 'Also time the forward with the 1x1 products in OpenBLAS '
                    '(needs g++).')

NATIVE = Path(__file__).resolve().parent / 'native' / 'blas_matmul.cc'
EPS = 1e-5


def _bn(x, p, s, relu=True):
  from dasl_jax.models import layers
  return layers._bn_apply(x, p['scale'], p['bias'], s['mean'], s['var'], EPS, relu)


def _folded(p, s, kernel):
  """Batch norm folded into a product's kernel: (kernel * a, shift), numpy float32."""
  a = np.asarray(p['scale']) / np.sqrt(np.asarray(s['var']) + EPS)
  shift = np.asarray(p['bias']) - np.asarray(s['mean']) * a
  return (np.asarray(kernel).reshape(-1, a.shape[0]) * a).astype(np.float32), shift.astype(np.float32)


def forward(variables, x, blocks=13, depthwise=True, pointwise=True, matmul=None):
  """mb05's forward as the inference path runs it on the CPU (patches stem, depthwise
  written once padded, 1x1 as matrix products), through block ``blocks``, then the
  spatial mean: uint8 (B, 120, 120, 3) -> (B, C). Without the input's normalisation and
  the last dense layer (a few microseconds). ``matmul(a, b, shift, relu)``: the
  products with batch norm folded (the FFI form); None: XLA's dot and batch norm."""
  from dasl_jax.models import layers
  from dasl_jax.models.mobilenet import BLOCKS
  P, S = variables['params'], variables['batch_stats']
  x = x.astype(jnp.float32)
  b = x.shape[0]
  if matmul is None:
    x = _bn(layers.conv3x3_patches(x, P['conv1']['kernel'], 2), P['bn1'], S['bn1'])
  else:
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ho = x.shape[1] // 2
    patches = jnp.concatenate(layers._taps(xp, ho, ho, 2), axis=-1).reshape(b * ho * ho, -1)
    k, shift = _folded(P['bn1'], S['bn1'], P['conv1']['kernel'])
    x = matmul(patches, k, shift, True).reshape(b, ho, ho, -1)
  for name, _, stride in BLOCKS[:blocks]:
    p, s = P[name], S[name]
    if depthwise:
      x = layers._dw_forward(x, p['conv_dw']['kernel'], stride, pad_once=True)
    else:
      x = x[:, ::stride, ::stride]
    x = _bn(x, p['bn_dw'], s['bn_dw'])
    cout = p['conv_sep']['kernel'].shape[-1]
    if not pointwise:
      x = _bn(x[..., :1] * jnp.ones((cout,), x.dtype), p['bn_sep'], s['bn_sep'])
    elif matmul is None:
      x = _bn(layers.pointwise(x, p['conv_sep']['kernel']), p['bn_sep'], s['bn_sep'])
    else:
      _, h, w, c = x.shape
      k, shift = _folded(p['bn_sep'], s['bn_sep'], p['conv_sep']['kernel'])
      x = matmul(x.reshape(b * h * w, c), k, shift, True).reshape(b, h, w, cout)
  return jnp.mean(x, axis=(1, 2))


def _time_rounds(calls, rounds, repeats):
  """Median seconds per call of each of ``calls``, every round timing all of them."""
  per = {k: [] for k in calls}
  for _ in range(rounds):
    for k, call in calls.items():
      per[k].append(common.time_fn(call, repeats=repeats, warmup=2)['median_s'])
  return {k: float(np.median(v)) for k, v in per.items()}


def share_profile(variables, rounds, repeats):
  """The forward at batch 1 whole, without its depthwise 3x3s, without its 1x1 products,
  and without either: what each kind of layer costs inside the compiled program."""
  img = np.random.default_rng(0).integers(0, 256, (1, 120, 120, 3), np.uint8)
  forms = {'full': {}, 'no_depthwise': dict(depthwise=False),
           'no_pointwise': dict(pointwise=False),
           'neither': dict(depthwise=False, pointwise=False)}
  comp = {k: jax.jit(lambda x, kw=kw: forward(variables, x, **kw)).lower(img).compile()
          for k, kw in forms.items()}
  calls = {k: (lambda c: lambda: jax.block_until_ready(c(img)))(c) for k, c in comp.items()}
  med = _time_rounds(calls, rounds, repeats)
  res = {f'{k}_ms': v * 1e3 for k, v in med.items()}
  res['depthwise_share_ms'] = (med['full'] - med['no_depthwise']) * 1e3
  res['pointwise_share_ms'] = (med['full'] - med['no_pointwise']) * 1e3
  print(f'batch 1 forward {med["full"] * 1e3:.3f} ms: without the 1x1 products '
        f'{med["no_pointwise"] * 1e3:.3f} ms, without the depthwise 3x3s '
        f'{med["no_depthwise"] * 1e3:.3f} ms, without either {med["neither"] * 1e3:.3f} ms')
  return res


def dot_table(variables, rounds, repeats):
  """Each 1x1 product of a batch-1 forward (and the stem's patches product): XLA's dot
  against numpy's ``a @ b`` (its bundled OpenBLAS), same operands."""
  from dasl_jax.models.mobilenet import BLOCKS
  P = variables['params']
  rng = np.random.default_rng(0)
  shapes, side = [('stem', 60 * 60, 27, P['conv1']['kernel'].shape[-1])], 60
  for name, _, stride in BLOCKS:
    side = -(-side // stride)
    k = P[name]['conv_sep']['kernel']
    shapes.append((name, side * side, k.shape[-2], k.shape[-1]))
  rows = []
  calls = {}
  for name, m, k, n in shapes:
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = jax.jit(jnp.dot).lower(a, b).compile()
    calls[(name, 'xla')] = (lambda c, a, b: lambda: jax.block_until_ready(c(a, b)))(c, a, b)
    calls[(name, 'numpy')] = (lambda a, b: lambda: a @ b)(a, b)
  med = _time_rounds(calls, rounds, repeats)
  for name, m, k, n in shapes:
    gf = 2 * m * k * n / 1e9
    x, npy = med[(name, 'xla')], med[(name, 'numpy')]
    rows.append({'product': name, 'm': m, 'k': k, 'n': n, 'xla_us': x * 1e6,
                 'numpy_us': npy * 1e6, 'xla_gflops': gf / x, 'numpy_gflops': gf / npy})
  tx, tn = sum(r['xla_us'] for r in rows), sum(r['numpy_us'] for r in rows)
  print(f'the {len(rows)} products of a batch-1 forward, one call each: XLA {tx:.0f} us, '
        f'numpy {tn:.0f} us (' + ', '.join(f'{r["product"]} {r["xla_gflops"]:.0f}/'
                                            f'{r["numpy_gflops"]:.0f}' for r in rows) + ' GFLOP/s)')
  return {'products': rows, 'xla_sum_us': tx, 'numpy_sum_us': tn}


def _build_ffi():
  """Compile the FFI handler and register it with numpy's OpenBLAS; the target's name."""
  from dasl_jax.errors import DaslError
  libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + '.libs', 'libscipy_openblas64_*.so'))
  if not libs:
    raise DaslError('--ffi: numpy has no bundled OpenBLAS (numpy.libs/libscipy_openblas64_*.so)')
  build = Path(tempfile.mkdtemp(prefix='dasl_ffi_'))
  out = build / 'blas_matmul.so'
  cmd = ['g++', '-O3', '-std=c++17', '-shared', '-fPIC', f'-I{jax.ffi.include_dir()}',
         str(NATIVE), '-o', str(out)]
  try:
    subprocess.run(cmd, check=True, capture_output=True, text=True)
  except (OSError, subprocess.CalledProcessError) as e:
    shutil.rmtree(build, ignore_errors=True)
    raise DaslError(f'--ffi: building {NATIVE.name} with g++ failed: '
                    f'{getattr(e, "stderr", "") or e}'.strip()) from None
  blas = ctypes.CDLL(libs[0])
  lib = ctypes.CDLL(str(out))
  shutil.rmtree(build, ignore_errors=True)  # loaded: the file is no longer needed
  lib.dasl_set_sgemm(ctypes.cast(blas.scipy_cblas_sgemm64_, ctypes.c_void_p))
  jax.ffi.register_ffi_target('dasl_blas_matmul_shift', jax.ffi.pycapsule(lib.DaslMatmulShift),
                              platform='cpu')
  return 'dasl_blas_matmul_shift', os.path.basename(libs[0])


def ffi_compare(variables, rounds, repeats, large):
  target, blas = _build_ffi()

  def matmul(a, b, shift, relu):
    out = jax.ShapeDtypeStruct((a.shape[0], b.shape[1]), jnp.float32)
    return jax.ffi.ffi_call(target, out)(a, b, shift, relu=relu)

  rng = np.random.default_rng(0)
  res = {'blas': blas}
  for batch in (1, large):
    img = rng.integers(0, 256, (batch, 120, 120, 3), dtype=np.uint8)
    comp = {'xla': jax.jit(lambda x: forward(variables, x)).lower(img).compile(),
            'ffi': jax.jit(lambda x: forward(variables, x, matmul=matmul)).lower(img).compile()}
    diff = float(np.abs(np.asarray(comp['xla'](img)) - np.asarray(comp['ffi'](img))).max())
    calls = {k: (lambda c: lambda: jax.block_until_ready(c(img)))(c) for k, c in comp.items()}
    med = _time_rounds(calls, rounds, repeats if batch == 1 else max(2, repeats // 5))
    res[f'batch{batch}'] = {'xla_ms': med['xla'] * 1e3, 'ffi_ms': med['ffi'] * 1e3,
                            'ffi_time_vs_xla': med['ffi'] / med['xla'],
                            'max_abs_diff': diff}
    print(f'batch {batch}: XLA {med["xla"] * 1e3:.3f} ms, OpenBLAS through FFI '
          f'{med["ffi"] * 1e3:.3f} ms ({med["ffi"] / med["xla"]:.2f}x the time; '
          f'features differ by at most {diff:.1e})')
  return res


def run(rounds=5, repeats=20, large=128, ffi=False):
  from dasl_jax import cpu_runtime
  from benchmarks.inference import load_model_inputs
  tuned = cpu_runtime.tune_malloc()
  variables, _, _, weights = load_model_inputs()
  res = {'weights': weights, 'tune_malloc': tuned, 'rounds': rounds, 'repeats': repeats,
         'xla_flags': os.environ.get('XLA_FLAGS', '')}
  res['shares'] = share_profile(variables, rounds, repeats)
  res['products'] = dot_table(variables, rounds, repeats)
  if ffi:
    res['ffi'] = ffi_compare(variables, rounds, repeats, large)
  return res


def main(argv):
  del argv
  common.finish(lambda: run(FLAGS.rounds, FLAGS.repeats, FLAGS.large_batch, FLAGS.ffi),
                FLAGS.json)


if __name__ == '__main__':
  from benchmarks import inference  # noqa: F401  (its --json, --large_batch, --repeats)
  _define_flags()
  app.run(main)
