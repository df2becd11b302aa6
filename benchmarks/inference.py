r"""Inference throughput: MobileNetV1 x0.5 regressor + 68-landmark reconstruction.

  python -m benchmarks.inference [--json OUT.json] [--quick]

Times one jitted function (uint8 BGR crops -> normalise -> network -> de-whiten
-> 68 crop landmarks) at batch 1 (ms/img) and at a large batch (img/s), with
the depthwise conv written 'shifted' and 'grouped', and, where torch is
installed, the PyTorch original of the same network with the same weights
(eager, ``torch.set_num_threads(2)``). All in one run, so the ratios are
comparable on a shared, noisy machine. Uses 3DDFA_V2's mb05 weights from
$DASL_ASSETS when present, else random weights of the same shapes.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from benchmarks import torch_reference
from dasl_jax import assets
from dasl_jax.inference import core as predict_batch
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.geometry import params as P
from dasl_jax.models.mobilenet import BLOCKS, MobileNetV1

flags.DEFINE_string('json', None, 'Write results here as JSON.')
flags.DEFINE_bool('quick', False, 'Tiny run for CI: batches 1 and 4, two repeats.')
flags.DEFINE_integer('large_batch', 128, 'The throughput batch size.')
flags.DEFINE_integer('repeats', 20, 'Timed calls per setting (median reported).')
flags.DEFINE_bool('torch', True, 'Include the PyTorch original when torch is installed.')
flags.DEFINE_integer('host_devices', 0, 'Also time the large batch split over this many XLA '
                     'host devices (0: one per core, 1: off), as experiments.evaluate runs it.')
flags.DEFINE_bool('torch_own_process', True, 'Also time PyTorch in a fresh process with the '
                  'default allocator (tune_malloc in this one speeds PyTorch up as well).')
flags.DEFINE_bool('torch_only', False, 'Internal: time only PyTorch (the fresh process).')
FLAGS = flags.FLAGS

WIDTH = 0.5


def load_model_inputs():
  """(variables, param_stats, landmark model, description) for mb05, real or random."""
  pth = assets.asset('pretrained', 'mb05_120x120.pth')
  stats_file = assets.asset('pretrained', 'param_mean_std_62d_120x120.pkl')
  bfm_dir = assets.asset('bfm', 'keypoints68')
  if pth.exists() and stats_file.exists() and bfm_dir.exists():
    from dasl_jax.io import torch_pickle
    from dasl_jax.models.mobilenet import variables_from_torch
    variables = variables_from_torch(torch_pickle.load_state_dict(pth), WIDTH)
    return variables, P.load_param_stats(stats_file), mm.load_keypoints68(bfm_dir), str(pth)
  # Random weights of the right shapes from eval_shape: compiling a jitted
  # init (its RNG) takes ~20 s on a small CPU, far longer than the benchmark.
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(MobileNetV1(WIDTH).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 120, 120, 3)))
  variables = jax.tree_util.tree_map_with_path(
      lambda path, s: (1.0 + np.abs(rng.normal(size=s.shape))
                       if getattr(path[-1], 'key', '') == 'var'
                       else 0.1 * rng.normal(size=s.shape)).astype(np.float32), shapes)
  stats = P.ParamStats(rng.normal(size=62).astype(np.float32),
                       np.abs(rng.normal(size=62)).astype(np.float32) + 0.1, 'random')
  model = mm._build(rng.normal(size=204), rng.normal(size=(204, 40)),
                    rng.normal(size=(204, 10)), np.arange(68), 'random')
  return variables, stats, model, 'random weights (assets not found)'


def torch_state_dict(variables):
  """Flax variables -> 3DDFA_V2 PyTorch state dict (numpy), inverse of the converter."""
  p, s = variables['params'], variables['batch_stats']
  sd = {'conv1.weight': np.asarray(p['conv1']['kernel']).transpose(3, 2, 0, 1)}

  def bn(prefix, pp, ss):
    sd[f'{prefix}.weight'], sd[f'{prefix}.bias'] = pp['scale'], pp['bias']
    sd[f'{prefix}.running_mean'], sd[f'{prefix}.running_var'] = ss['mean'], ss['var']

  bn('bn1', p['bn1'], s['bn1'])
  for name, _, _ in BLOCKS:
    sd[f'{name}.conv_dw.weight'] = np.asarray(p[name]['conv_dw']['kernel']).transpose(3, 2, 0, 1)
    sd[f'{name}.conv_sep.weight'] = np.asarray(p[name]['conv_sep']['kernel']).transpose(3, 2, 0, 1)
    bn(f'{name}.bn_dw', p[name]['bn_dw'], s[name]['bn_dw'])
    bn(f'{name}.bn_sep', p[name]['bn_sep'], s[name]['bn_sep'])
  sd['fc_param.weight'] = np.asarray(p['fc_param']['kernel']).T
  sd['fc_param.bias'] = p['fc_param']['bias']
  return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def torch_predictor(variables, stats, model):
  """PyTorch: uint8 NHWC BGR -> network -> de-whiten -> (B, 68, 2) crop landmarks (v2)."""
  import torch
  torch.set_num_threads(2)
  net = torch_reference.mobilenet_v1(WIDTH, in_channels=3)
  net.load_state_dict({k: torch.from_numpy(v) for k, v in torch_state_dict(variables).items()},
                      strict=True)
  net.eval()
  lm = model.landmark_model()
  u = torch.from_numpy(np.array(lm.u)).reshape(68, 3)
  w_shp = torch.from_numpy(np.array(lm.w_shp)).reshape(68, 3, 40)
  w_exp = torch.from_numpy(np.array(lm.w_exp)).reshape(68, 3, 10)
  mean = torch.from_numpy(np.array(stats.mean, np.float32))
  std = torch.from_numpy(np.array(stats.std, np.float32))

  def predict(image_u8):
    with torch.no_grad():
      x = (torch.from_numpy(image_u8).permute(0, 3, 1, 2).float() - 127.5) / 128.0
      p = net(x) * std + mean
      pose = p[:, :12].reshape(-1, 3, 4)
      shp = (u + torch.einsum('kdc,bc->bkd', w_shp, p[:, 12:52])
             + torch.einsum('kdc,bc->bkd', w_exp, p[:, 52:62]))
      v = torch.einsum('bij,bkj->bki', pose[:, :, :3], shp) + pose[:, None, :, 3]
      return torch.stack([v[..., 0] - 1, 120 - v[..., 1]], -1).numpy()

  return predict


def _summarise(r, large):
  """Medians (the headline) and best-of-repeats (less hurt by a busy machine)."""
  r['batch1_ms_per_img'] = r['batch1']['median_s'] * 1e3
  r['large_img_per_s'] = large / r[f'batch{large}']['median_s']
  r['batch1_ms_per_img_best'] = r['batch1']['min_s'] * 1e3
  r['large_img_per_s_best'] = large / r[f'batch{large}']['min_s']


def _report(name, r, large):
  print(f'{name:12s} batch 1: {r["batch1_ms_per_img"]:8.3f} ms/img (best '
        f'{r["batch1_ms_per_img_best"]:.3f})   batch {large}: {r["large_img_per_s"]:7.1f} img/s '
        f'(best {r["large_img_per_s_best"]:.1f})', flush=True)


def _setting(quick, large_batch, repeats):
  """(large batch, repeats, warm-up calls, {batch: uint8 crops}): the same crops in
  every process, so PyTorch in its own process sees what JAX saw."""
  large = 4 if quick else large_batch
  repeats, warmup = (2, 1) if quick else (repeats, 2)
  rng = np.random.default_rng(0)
  images = {b: rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8) for b in (1, large)}
  return large, repeats, warmup, images


def run_torch_only(quick=False, large_batch=128, repeats=20):
  """PyTorch alone, same weights and images as :func:`run` (for a fresh process)."""
  variables, stats, model, weights = load_model_inputs()
  large, repeats, warmup, images = _setting(quick, large_batch, repeats)
  tp = torch_predictor(variables, stats, model)
  r = {f'batch{b}': common.time_fn(lambda b=b: tp(images[b]), repeats=repeats, warmup=warmup)
       for b in (1, large)}
  _summarise(r, large)
  r['threads'] = 2
  return {'torch_own_process': r, 'weights': weights}


def _torch_in_own_process(quick, large, repeats):
  """Run :func:`run_torch_only` in a fresh interpreter (glibc's default malloc)."""
  import json
  import subprocess
  import sys
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    out = f'{d}/t.json'
    cmd = [sys.executable, '-m', 'benchmarks.inference', '--torch_only', f'--json={out}',
           f'--large_batch={large}', f'--repeats={repeats}'] + (['--quick'] if quick else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
      print(f'PyTorch in its own process failed: {r.stderr.strip()[-300:]}', flush=True)
      return None
    return json.loads(open(out).read())['torch_own_process']


def run(quick=False, large_batch=128, repeats=20, with_torch=True, torch_own_process=True):
  """Measure everything; returns the result dict (without the header)."""
  variables, stats, model, weights = load_model_inputs()
  large, repeats, warmup, images = _setting(quick, large_batch, repeats)
  zeros18 = {b: np.zeros((b, 18, 2), np.float32) for b in (1, large)}
  res = {'model': f'MobileNetV1 x{WIDTH} + 68 landmarks', 'weights': weights,
         'large_batch': large, 'quick': quick, 'results': {}}
  outputs = {}
  for impl in ('shifted', 'grouped'):
    fn = predict_batch.make_forward(MobileNetV1(WIDTH, depthwise=impl), 3, 'v2')
    dev_vars = jax.device_put(variables)
    lm = model.landmark_model()
    ones18 = {b: np.ones((b, 18), np.float32) for b in (1, large)}
    r = {}
    for b in (1, large):
      call = lambda b=b: fn(dev_vars, stats, lm, images[b], zeros18[b], ones18[b])['lms68']
      t = common.time_fn(call, repeats=repeats, warmup=warmup, block=jax.block_until_ready)
      r[f'batch{b}'] = t
      outputs[(impl, b)] = np.asarray(call())
    _summarise(r, large)
    res['results'][f'jax_{impl}'] = r
    _report(f'jax {impl}', r, large)
  devices = jax.local_devices()
  if len(devices) > 1 and large % len(devices) == 0:
    # The large batch split over host devices, as predict_batch.run_batches runs it.
    replicate, split = predict_batch.batch_placement(large)
    fn = predict_batch.make_forward(MobileNetV1(WIDTH, depthwise='shifted'), 3, 'v2')
    rep = replicate((variables, stats, model.landmark_model()))
    img_s, pts_s = split(images[large]), split(zeros18[large])
    vis_s = split(np.ones((large, 18), np.float32))
    call = lambda: fn(*rep, img_s, pts_s, vis_s)['lms68']
    t = common.time_fn(call, repeats=repeats, warmup=warmup, block=jax.block_until_ready)
    r = {f'batch{large}': t, 'large_img_per_s': large / t['median_s'],
         'large_img_per_s_best': large / t['min_s'], 'devices': len(devices)}
    res['results']['jax_shifted_split'] = r
    np.testing.assert_allclose(np.asarray(call()), outputs[('shifted', large)], atol=1e-3)
    print(f'jax shifted, batch {large} over {len(devices)} host devices: '
          f'{r["large_img_per_s"]:7.1f} img/s (best {r["large_img_per_s_best"]:.1f})', flush=True)
  res['max_lms_diff_shifted_vs_grouped_px'] = float(
      np.abs(outputs[('shifted', large)] - outputs[('grouped', large)]).max())
  try:
    import torch  # noqa: F401
    have_torch = True
  except ImportError:
    have_torch = False
  if with_torch and have_torch:
    tp = torch_predictor(variables, stats, model)
    r = {}
    for b in (1, large):
      r[f'batch{b}'] = common.time_fn(lambda b=b: tp(images[b]), repeats=repeats, warmup=warmup)
    _summarise(r, large)
    r['threads'] = 2
    res['results']['torch'] = r
    res['max_lms_diff_jax_vs_torch_px'] = float(
        np.abs(outputs[('shifted', large)] - tp(images[large])).max())
    _report('torch eager', r, large)
    if torch_own_process:
      own = _torch_in_own_process(quick, large_batch, repeats)
      res['results']['torch_own_process'] = own
      if own:
        _report('torch, own', own, large)
  else:
    res['results']['torch'] = None
  rr = res['results']
  ratios = {
      'shifted_over_grouped_speed_batch1': rr['jax_grouped']['batch1_ms_per_img'] /
      rr['jax_shifted']['batch1_ms_per_img'],
      'shifted_over_grouped_speed_large': rr['jax_shifted']['large_img_per_s'] /
      rr['jax_grouped']['large_img_per_s'],
  }
  if rr['torch']:
    ratios['jax_shifted_over_torch_speed_batch1'] = (rr['torch']['batch1_ms_per_img'] /
                                                     rr['jax_shifted']['batch1_ms_per_img'])
    ratios['jax_shifted_over_torch_speed_large'] = (rr['jax_shifted']['large_img_per_s'] /
                                                    rr['torch']['large_img_per_s'])
    own = rr.get('torch_own_process')
    if own:
      ratios['jax_shifted_over_torch_own_process_speed_batch1'] = (
          own['batch1_ms_per_img'] / rr['jax_shifted']['batch1_ms_per_img'])
      ratios['jax_shifted_over_torch_own_process_speed_large'] = (
          rr['jax_shifted']['large_img_per_s'] / own['large_img_per_s'])
    if 'jax_shifted_split' in rr:
      ratios['jax_split_over_torch_speed_large'] = (rr['jax_shifted_split']['large_img_per_s'] /
                                                    rr['torch']['large_img_per_s'])
  res['ratios'] = ratios
  for k, v in ratios.items():
    print(f'{k}: {v:.2f}x')
  return res


def main(argv):
  # Same process set-up as the project's commands (experiments/*): see cpu_runtime.
  from dasl_jax import cpu_runtime
  del argv
  if FLAGS.torch_only:  # PyTorch as users run it: no malloc tuning, no JAX in the process
    common.finish(lambda: run_torch_only(FLAGS.quick, FLAGS.large_batch, FLAGS.repeats),
                  FLAGS.json)
    return
  cpu_runtime.tune_malloc()
  cpu_runtime.split_host_devices(FLAGS.host_devices)
  common.finish(lambda: run(FLAGS.quick, FLAGS.large_batch, FLAGS.repeats, FLAGS.torch,
                            FLAGS.torch_own_process), FLAGS.json)


if __name__ == '__main__':
  app.run(main)
