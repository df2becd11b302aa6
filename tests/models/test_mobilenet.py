"""MobileNetV1 (3DDFA_V2's): size, padding, depthwise implementations, PyTorch parity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.errors import DaslError
from dasl_jax.models import mobilenet as M


def _shapes(width, in_channels=3, size=32):
  return jax.eval_shape(M.MobileNetV1(width).init, jax.random.PRNGKey(0),
                        jnp.zeros((1, size, size, in_channels)))


def _random_variables(width, in_channels=3, seed=0):
  """Random weights of the right shapes (no compiled init: its RNG compiles slowly)."""
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    name = getattr(path[-1], 'key', '')
    if name == 'var':
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    if name == 'scale':
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 1
    return (rng.normal(size=s.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(leaf, _shapes(width, in_channels))


def _n_params(tree):
  return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(tree))


def test_parameter_count_matches_3ddfa_v2():
  # 850,398 = trainable tensors of 3DDFA_V2's mb05 (convs, BN scale/bias,
  # fc_param), without BN running statistics and the unused fc_lm head.
  assert _n_params(_shapes(0.5)['params']) == 850_398
  # Independent count from the architecture table (assets README).
  outs = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
      [(1024, 2), (1024, 1)]
  for width, cin in ((0.5, 3), (1.0, 4), (0.25, 3)):
    c = int(32 * width)
    n = 9 * cin * c + 2 * c
    for co, _ in outs:
      co = int(co * width)
      n += 9 * c + 2 * c + c * co + 2 * co
      c = co
    n += c * 62 + 62
    assert _n_params(_shapes(width, cin)['params']) == n, width


def test_widths_and_channels():
  s = _shapes(1.0, in_channels=4)
  assert s['params']['conv1']['kernel'].shape == (3, 3, 4, 32)
  assert s['params']['dw6']['conv_dw']['kernel'].shape == (3, 3, 1, 1024)
  assert s['params']['fc_param']['kernel'].shape == (1024, 62)
  assert s['batch_stats']['bn1']['var'].shape == (32,)
  with pytest.raises(DaslError):
    jax.eval_shape(M.MobileNetV1(0.5).init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 5)))


def _depthwise_numpy(x, k, stride):
  """Direct loop: PyTorch Conv2d(groups=C, padding=1, stride) in NHWC."""
  b, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
  out = np.zeros((b, ho, wo, c))
  for i in range(ho):
    for j in range(wo):
      patch = xp[:, i * stride:i * stride + 3, j * stride:j * stride + 3, :]
      out[:, i, j, :] = np.einsum('bhwc,hwc->bc', patch, k[:, :, 0, :])
  return out


@pytest.mark.parametrize('shape,stride', [((2, 7, 8, 5), 1), ((2, 8, 8, 3), 2),
                                          ((1, 9, 6, 4), 2)])
def test_depthwise_implementations_agree(shape, stride):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  k = rng.normal(size=(3, 3, 1, shape[-1])).astype(np.float32)
  want = _depthwise_numpy(x, k, stride)
  np.testing.assert_allclose(M.depthwise_shifted(x, k, stride), want, atol=1e-5)
  np.testing.assert_allclose(M.depthwise_grouped(x, k, stride), want, atol=1e-5)


def test_auto_depthwise():
  assert M.resolve_depthwise('auto') == ('shifted' if jax.default_backend() == 'cpu'
                                          else 'grouped')
  with pytest.raises(DaslError):
    M.resolve_depthwise('fancy')


def test_model_shifted_equals_grouped_and_symmetric_stem_padding():
  v = _random_variables(0.25)
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)

  def run(impl):
    return jax.jit(lambda v, x: M.MobileNetV1(0.25, depthwise=impl).apply(
        v, x, capture_intermediates=lambda mdl, _: mdl.name == 'conv1'))(v, x)

  (ys, inter), (yg, _) = run('shifted'), run('grouped')
  assert ys.shape == (2, 62)
  np.testing.assert_allclose(ys, yg, rtol=1e-4, atol=1e-4)
  # Stem: PyTorch's stride-2 conv with one pixel of padding on every side.
  k = np.asarray(v['params']['conv1']['kernel'])  # (3, 3, 3, 8)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  want = np.stack([np.stack([np.einsum('bhwi,hwio->bo', xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3], k)
                             for j in range(16)], 1) for i in range(16)], 1)
  np.testing.assert_allclose(inter['intermediates']['conv1']['__call__'][0], want, atol=1e-4)


def test_train_mode_updates_batch_stats():
  v = _random_variables(0.25)
  x = np.random.default_rng(2).normal(size=(4, 16, 16, 3)).astype(np.float32)
  model = M.MobileNetV1(0.25)
  y, new = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=['batch_stats', 'intermediates'],
      capture_intermediates=lambda mdl, _: mdl.name == 'conv1'))(v, x)
  assert y.shape == (4, 62)
  conv1 = np.asarray(new['intermediates']['conv1']['__call__'][0])
  m0 = np.asarray(v['batch_stats']['bn1']['mean'])
  v0 = np.asarray(v['batch_stats']['bn1']['var'])
  # PyTorch's momentum 0.1: new = 0.9 old + 0.1 batch statistic.
  np.testing.assert_allclose(new['batch_stats']['bn1']['mean'],
                             0.9 * m0 + 0.1 * conv1.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new['batch_stats']['bn1']['var'],
                             0.9 * v0 + 0.1 * conv1.var((0, 1, 2)), rtol=1e-3, atol=1e-5)


def test_matches_pytorch_original():
  torch = pytest.importorskip('torch')
  tnn = torch.nn
  torch.manual_seed(0)
  width = 0.5

  # 3DDFA_V2's models/mobilenet_v1.py, written here independently.
  def block(cin, cout, stride):
    seq = tnn.Module()
    seq.conv_dw = tnn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
    seq.bn_dw = tnn.BatchNorm2d(cin)
    seq.conv_sep = tnn.Conv2d(cin, cout, 1, bias=False)
    seq.bn_sep = tnn.BatchNorm2d(cout)
    return seq

  net = tnn.Module()
  net.conv1 = tnn.Conv2d(3, 16, 3, 2, 1, bias=False)
  net.bn1 = tnn.BatchNorm2d(16)
  names = ['dw2_1', 'dw2_2', 'dw3_1', 'dw3_2', 'dw4_1', 'dw4_2'] + \
      [f'dw5_{i}' for i in range(1, 7)] + ['dw6']
  chans = [32, 64, 64, 128, 128, 256, 256, 256, 256, 256, 256, 512, 512]
  strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
  cin = 16
  for n, c, s in zip(names, chans, strides):
    setattr(net, n, block(cin, c, s))
    cin = c
  net.fc_param = tnn.Linear(512, 62)
  net.fc_lm = tnn.Linear(512, 136)
  with torch.no_grad():  # non-trivial BN statistics
    for m in net.modules():
      if isinstance(m, tnn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  net.eval()

  def forward(x):
    relu = torch.relu
    x = relu(net.bn1(net.conv1(x)))
    for n in names:
      b = getattr(net, n)
      x = relu(b.bn_dw(b.conv_dw(x)))
      x = relu(b.bn_sep(b.conv_sep(x)))
    return net.fc_param(x.mean((2, 3)))

  x = np.random.default_rng(3).normal(size=(2, 120, 120, 3)).astype(np.float32)
  with torch.no_grad():
    want = forward(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  sd = {f'module.{k}': v.numpy() for k, v in net.state_dict().items()}
  sd = {k[len('module.'):]: v for k, v in sd.items()}
  variables = M.variables_from_torch(sd, width)
  for impl in ('shifted', 'grouped'):
    got = jax.jit(M.MobileNetV1(width, depthwise=impl).apply)(variables, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_inference_benchmark_quick(tmp_path):
  import json
  import subprocess
  import sys
  from pathlib import Path
  out = tmp_path / 'bench.json'
  r = subprocess.run([sys.executable, '-m', 'benchmarks.inference', '--quick', '--notorch',
                      '--json', out],
                     cwd=Path(__file__).resolve().parents[2], capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr
  res = json.loads(out.read_text())
  for key in ('machine', 'versions', 'command', 'timestamp', 'results', 'ratios'):
    assert key in res
  assert res['machine']['cpu_count'] >= 1 and 'jax' in res['versions']
  assert 'benchmarks.inference --quick' in res['command']
  for impl in ('jax_shifted', 'jax_grouped'):
    assert res['results'][impl]['batch1_ms_per_img'] > 0
  assert res['max_lms_diff_shifted_vs_grouped_px'] < 1e-2
  assert res['results']['torch'] is None  # --notorch; PyTorch parity is tested above
