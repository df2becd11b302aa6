"""Converters of the peers' released checkpoints other than mb05 (which
tests/io/test_convert.py checks on the real file): 3DDFA_V2 mb1 and resnet22,
3DDFA v1's phase1_wpdc_vdc.pth.tar and 2DASL's ResNet-50.

No real file is available for these, so each test writes a .pth with the tensor
names, shapes and wrapping the peer code implies (random values, this
project's hand-written PyTorch writers) and compares the converted Flax model
with an independent numpy forward pass written here from the PyTorch
definitions (NCHW, OIHW weights, read straight from the state dict).
"""
import collections
import functools
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.io import checkpoint
from dasl_jax.io import peer_checkpoints as PC
from dasl_jax.errors import DaslError
from dasl_jax.models import mobilenet as M
from dasl_jax.models import resnet as R
from tests.helpers.asset_marks import asset_path, requires_assets
from tests.helpers.torch_files import FakeStorage, FakeTensor, write_legacy, write_zip

REPO = Path(__file__).resolve().parents[2]
EPS = 1e-5

# --------------------------------------------------------------------------
# Random state dicts with the peer names and shapes, and writing them.


def random_state_dict(shapes, rng, tracked=True):
  sd = collections.OrderedDict()
  for k, s in shapes.items():
    if k.endswith('running_var'):
      sd[k] = rng.uniform(0.5, 1.5, s).astype(np.float32)
    elif k.endswith(('running_mean', '.bias')) and len(s) == 1:
      sd[k] = rng.normal(0, 0.1, s).astype(np.float32)
    elif k.endswith('.weight') and len(s) == 1:  # BN scale
      sd[k] = rng.uniform(0.5, 1.5, s).astype(np.float32)
    else:
      fan_in = int(np.prod(s[1:]))
      sd[k] = (rng.normal(size=s) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if tracked and k.endswith('running_var'):
      sd[k[:-len('running_var')] + 'num_batches_tracked'] = np.array(1000, np.int64)
  return sd


def save_pth(path, sd, monkeypatch, writer=write_legacy, wrapper='state_dict', extra=None):
  """Write ``{wrapper: {'module.' + k: tensor}, **extra}`` as PyTorch would
  (DataParallel's prefix, as all three peers train with it)."""
  storages, tensors = [], collections.OrderedDict()
  for i, (k, a) in enumerate(sd.items()):
    st = FakeStorage(str(i), a.ravel())
    strides = tuple(int(s) // a.itemsize for s in np.ascontiguousarray(a).strides)
    tensors['module.' + k] = FakeTensor(st, 0, a.shape, strides)
    storages.append(st)
  obj = {'epoch': 50, wrapper: tensors}
  obj.update(extra or {})
  writer(path, obj, storages, monkeypatch)
  monkeypatch.undo()


# --------------------------------------------------------------------------
# The numpy reference (PyTorch layouts and semantics).


def conv(x, w, stride=1, pad=0, groups=1, bias=None):
  """torch.nn.functional.conv2d: x (B, C, H, W), w (O, C/groups, kh, kw)."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  o, cg, kh, kw = w.shape
  win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
  win = win[:, :, ::stride, ::stride]  # (B, C, Ho, Wo, kh, kw)
  b, c, ho, wo = win.shape[:4]
  if groups == 1:
    y = np.einsum('bchwij,ocij->bohw', win, w, optimize=True)
  else:  # depthwise (groups == C, one filter per channel)
    assert groups == c == o and cg == 1
    y = np.einsum('bchwij,cij->bchw', win, w[:, 0], optimize=True)
  if bias is not None:
    y = y + bias[None, :, None, None]
  return y


def bn(x, sd, p):
  s = sd[f'{p}.weight'] / np.sqrt(sd[f'{p}.running_var'] + EPS)
  return (x - sd[f'{p}.running_mean'][:, None, None]) * s[:, None, None] + sd[f'{p}.bias'][:, None, None]


relu = lambda x: np.maximum(x, 0)


def maxpool3s2p1(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max((-1, -2))


def avgpool7s2(x):
  return np.lib.stride_tricks.sliding_window_view(x, (7, 7), axis=(2, 3))[:, :, ::2, ::2].mean((-1, -2))


def mobilenet_np(sd, x, head):
  """3DDFA / 3DDFA_V2 MobileNetV1 forward (their mobilenet_v1.py)."""
  x = relu(bn(conv(x, sd['conv1.weight'], 2, 1), sd, 'bn1'))
  for name, _, stride in M.BLOCKS:
    c = x.shape[1]
    x = relu(bn(conv(x, sd[f'{name}.conv_dw.weight'], stride, 1, groups=c), sd, f'{name}.bn_dw'))
    x = relu(bn(conv(x, sd[f'{name}.conv_sep.weight']), sd, f'{name}.bn_sep'))
  x = x.mean((2, 3))
  return x @ sd[f'{head}.weight'].T + sd[f'{head}.bias']


def basic_block_np(sd, x, p, stride):
  y = relu(bn(conv(x, sd[f'{p}.conv1.weight'], stride, 1), sd, f'{p}.bn1'))
  y = bn(conv(y, sd[f'{p}.conv2.weight'], 1, 1), sd, f'{p}.bn2')
  if f'{p}.downsample.0.weight' in sd:
    x = bn(conv(x, sd[f'{p}.downsample.0.weight'], stride), sd, f'{p}.downsample.1')
  return relu(x + y)


def bottleneck_np(sd, x, p, stride):
  y = relu(bn(conv(x, sd[f'{p}.conv1.weight']), sd, f'{p}.bn1'))
  y = relu(bn(conv(y, sd[f'{p}.conv2.weight'], stride, 1), sd, f'{p}.bn2'))
  y = bn(conv(y, sd[f'{p}.conv3.weight']), sd, f'{p}.bn3')
  if f'{p}.downsample.0.weight' in sd:
    x = bn(conv(x, sd[f'{p}.downsample.0.weight'], stride), sd, f'{p}.downsample.1')
  return relu(x + y)


def resnet22_np(sd, x):
  """3DDFA_V2 models/resnet.py resnet22: conv_param (1x1 + bias) then the average pool."""
  x = relu(bn(conv(x, sd['conv1.weight'], 2, 2), sd, 'bn1'))
  x = relu(bn(conv(x, sd['conv2.weight'], 1, 1), sd, 'bn2'))
  for s, n in enumerate((3, 4, 3)):
    for b in range(n):
      x = basic_block_np(sd, x, f'layer{s + 1}.{b}', 2 if b == 0 else 1)
  x = conv(x, sd['conv_param.weight'], bias=sd['conv_param.bias'])
  return x.mean((2, 3))


def resnet50_2dasl_np(sd, x):
  """2DASL test_codes/resnet_xgtu_4chls.py resnet50: layer4 stride 1, AvgPool2d(7, 2), fc.

  Returns (outputs, outputs had the pool been a global mean)."""
  x = maxpool3s2p1(relu(bn(conv(x, sd['conv1.weight'], 2, 3), sd, 'bn1')))
  for s, (n, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 1))):
    for b in range(n):
      x = bottleneck_np(sd, x, f'layer{s + 1}.{b}', stride if b == 0 else 1)
  fc = lambda f: f @ sd['fc.weight'].T + sd['fc.bias']
  return fc(avgpool7s2(x).reshape(x.shape[0], -1)), fc(x.mean((2, 3)))


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, variables, x):
  return module.apply(variables, x)


def flax_out(module, variables, x_nchw):
  """The Flax module on an NCHW array (jitted, one compile per module and shape:
  eager dispatch compiles every op and is far slower on CPU)."""
  return np.asarray(_apply(module, variables, jnp.asarray(x_nchw.transpose(0, 2, 3, 1))))


# --------------------------------------------------------------------------
# MobileNets: 3DDFA_V2 x1.0 and 3DDFA v1.


def test_mb1_file_converts_and_matches_numpy(tmp_path, monkeypatch):
  rng = np.random.default_rng(1)
  sd = random_state_dict(M.torch_state_dict_shapes(1.0), rng)
  assert sd['conv1.weight'].shape == (32, 3, 3, 3) and sd['fc_param.weight'].shape == (62, 1024)
  sd['fc_lm.weight'] = rng.normal(size=(136, 1024)).astype(np.float32)  # 3DDFA_V2's extra head
  sd['fc_lm.bias'] = np.zeros(136, np.float32)
  save_pth(tmp_path / 'mb1_120x120.pth', sd, monkeypatch)
  read = PC.read_state_dict(tmp_path / 'mb1_120x120.pth', 'mb1')
  assert PC.guess_kind(read)[0] == 'mb1'
  cfg, variables = PC.convert_state_dict(read, 'mb1')
  assert (cfg.arch, cfg.width, cfg.in_channels, cfg.convention) == ('mobilenet', 1.0, 3, 'v2')
  from dasl_jax.models import create_regressor
  x = rng.normal(size=(1, 3, 32, 32)).astype(np.float32)
  got = flax_out(create_regressor(cfg), variables, x)
  want = mobilenet_np(sd, x, 'fc_param')
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def test_3ddfa_v1_command_defaults_and_numpy(tmp_path, monkeypatch):
  """phase1_wpdc_vdc.pth.tar: {'epoch', 'state_dict'} of a DataParallel
  mobilenet_1 whose head is ``fc``; the command finds ../train.configs/param_whitening.pkl."""
  from experiments.convert_checkpoint import convert
  rng = np.random.default_rng(2)
  shapes = {k.replace('fc_param', 'fc'): s for k, s in M.torch_state_dict_shapes(1.0).items()}
  sd = random_state_dict(shapes, rng, tracked=False)
  (tmp_path / 'models').mkdir()
  (tmp_path / 'train.configs').mkdir()
  pth = tmp_path / 'models' / 'phase1_wpdc_vdc.pth.tar'
  save_pth(pth, sd, monkeypatch)
  mean, std = rng.normal(size=62), rng.uniform(1, 2, 62)
  (tmp_path / 'train.configs' / 'param_whitening.pkl').write_bytes(
      pickle.dumps({'param_mean': mean, 'param_std': std}))
  out = convert(pth, tmp_path / 'v1', kind='auto')
  r = checkpoint.restore(out)
  assert r.model_config.convention == 'v1' and r.model_config.width == 1.0
  assert r.model_config.in_channels == 3
  np.testing.assert_allclose(r.param_stats.mean, mean, rtol=1e-6)
  np.testing.assert_allclose(r.param_stats.std, std, rtol=1e-6)
  x = rng.normal(size=(1, 3, 32, 32)).astype(np.float32)
  want = mobilenet_np(sd, x, 'fc')
  np.testing.assert_allclose(flax_out(r.module, r.variables, x), want, rtol=2e-4,
                             atol=2e-4 * np.abs(want).max())
  # The same file under the wrong kind: one line naming what it looks like.
  with pytest.raises(DaslError, match=r'looks like 3DDFA \(v1\) MobileNetV1 x1 \(--kind 3ddfa_v1\)'):
    convert(pth, tmp_path / 'o', param_stats=tmp_path / 'train.configs' / 'param_whitening.pkl',
            kind='mb1')


# --------------------------------------------------------------------------
# 3DDFA_V2 ResNet-22.


def test_resnet22_shapes_follow_the_peer_definition():
  s = R.resnet22_state_dict_shapes()
  assert s['conv1.weight'] == (32, 3, 5, 5) and s['conv2.weight'] == (64, 32, 3, 3)
  assert s['layer1.0.downsample.0.weight'] == (128, 64, 1, 1)
  assert s['layer3.2.conv2.weight'] == (512, 512, 3, 3)
  assert s['conv_param.weight'] == (62, 512, 1, 1)
  assert 'layer1.1.downsample.0.weight' not in s and 'layer3.3.conv1.weight' not in s
  blocks = {k.split('.')[0] + '.' + k.split('.')[1] for k in s if k.startswith('layer')}
  assert len(blocks) == 3 + 4 + 3  # resnet22: [3, 4, 3] basic blocks
  convs = [k for k, v in s.items() if len(v) == 4 and 'downsample' not in k]
  assert len(convs) == 2 + 2 * 10 + 1  # 22 weight layers + the 1x1 head


def test_resnet22_file_converts_and_matches_numpy(tmp_path, monkeypatch):
  from experiments.convert_checkpoint import convert
  rng = np.random.default_rng(3)
  sd = random_state_dict(R.resnet22_state_dict_shapes(), rng)
  save_pth(tmp_path / 'resnet22.pth', sd, monkeypatch, writer=write_zip)
  (tmp_path / PC.V2_STATS).write_bytes(pickle.dumps({'mean': np.zeros(62), 'std': np.ones(62)}))
  out = convert(tmp_path / 'resnet22.pth', tmp_path / 'r22', kind='resnet22')
  r = checkpoint.restore(out)
  assert r.model_config.arch == 'resnet22' and r.model_config.convention == 'v2'
  x = rng.normal(size=(1, 3, 40, 40)).astype(np.float32)
  want = resnet22_np(sd, x)
  np.testing.assert_allclose(flax_out(r.module, r.variables, x), want, rtol=2e-4,
                             atol=2e-4 * np.abs(want).max())
  # 4 channels: the FLM channel gets zero weights (same outputs until trained).
  _, v4 = PC.convert_state_dict(sd, 'resnet22', in_channels=4)
  k4 = v4['params']['conv1']['kernel']
  assert k4.shape == (5, 5, 4, 32) and not k4[:, :, 3].any()
  np.testing.assert_array_equal(k4[:, :, :3], r.variables['params']['conv1']['kernel'])


def test_resnet22_errors():
  rng = np.random.default_rng(4)
  sd = random_state_dict(R.resnet22_state_dict_shapes(), rng)
  bad = dict(sd)
  del bad['layer2.1.bn1.running_var']
  with pytest.raises(DaslError, match=r'^x.pth: missing layer2.1.bn1.running_var \(and 0 more\)'):
    PC.convert_state_dict(bad, 'resnet22', source='x.pth')
  bad = dict(sd, **{'layer3.0.conv2.weight': np.zeros((512, 512, 1, 1), np.float32)})
  with pytest.raises(DaslError, match=r'layer3.0.conv2.weight has shape \(512, 512, 1, 1\)'):
    PC.convert_state_dict(bad, 'resnet22')
  bad = dict(sd, **{'layer4.0.conv1.weight': np.zeros((1,), np.float32)})
  with pytest.raises(DaslError, match='unexpected tensor layer4.0.conv1.weight'):
    PC.convert_state_dict(bad, 'resnet22')
  sd['conv_lm.weight'] = np.zeros((136, 512, 1, 1), np.float32)  # dropped, as 3DDFA_V2 does
  PC.convert_state_dict(sd, 'resnet22')
  with pytest.raises(DaslError, match=r'looks like 3DDFA_V2 ResNet-22 \(--kind resnet22\)'):
    PC.convert_state_dict(sd, '2dasl')


# --------------------------------------------------------------------------
# 2DASL ResNet-50 (4 channels).


def test_2dasl_numpy_forward_small_width():
  """All layers against numpy on a width-8 network of the same structure, at
  120x120 (the final map is 8x8, so AvgPool2d(7, 2) is the top-left 7x7 mean)."""
  rng = np.random.default_rng(5)
  sd = random_state_dict(R.torch_state_dict_shapes(50, 4, 62, base_width=8), rng)
  variables = R.variables_from_torch(sd, 50, 4, 62, base_width=8)
  x = rng.normal(size=(1, 4, 120, 120)).astype(np.float32)
  want, want_global_mean = resnet50_2dasl_np(sd, x)
  got = flax_out(R.ResNet(depth=50, base_width=8, pool='avg7s2'), variables, x)
  np.testing.assert_allclose(got, want, rtol=5e-4, atol=5e-4 * np.abs(want).max())
  # The pooling matters: a global mean would be another function.
  assert np.abs(got - want_global_mean).max() > 1e-2 * np.abs(want).max()


def test_2dasl_file_converts(tmp_path, monkeypatch):
  """Full size: 2DASL keeps the regressor under 'res_state_dict' (its benchmark
  loads that key into a DataParallel resnet50 with 4 input channels)."""
  rng = np.random.default_rng(6)
  shapes = R.torch_state_dict_shapes(50, 4, 62)
  assert shapes['conv1.weight'] == (64, 4, 7, 7) and shapes['fc.weight'] == (62, 2048)
  assert shapes['layer4.0.downsample.0.weight'] == (2048, 1024, 1, 1)
  sd = random_state_dict(shapes, rng)
  pth = tmp_path / '2DASL_checkpoint_epoch_allParams_stage2.pth.tar'
  save_pth(pth, sd, monkeypatch, wrapper='res_state_dict')
  read = PC.read_state_dict(pth, '2dasl')
  assert PC.guess_kind(PC.read_state_dict(pth))[0] == '2dasl'  # what --kind auto sees
  cfg, v = PC.convert_state_dict(read, '2dasl', source=str(pth))
  assert (cfg.arch, cfg.depth, cfg.in_channels, cfg.convention, cfg.resnet_pool) == (
      'resnet', 50, 4, 'v1', 'avg7s2')
  checkpoint.check_variables(cfg, v, 'converted')  # names and shapes of the Flax model
  p, s = v['params'], v['batch_stats']
  w = sd['conv1.weight']
  assert p['conv1']['kernel'][3, 1, 2, 9] == w[9, 2, 3, 1]
  w = sd['layer3.4.conv2.weight']
  assert p['layer3_4']['conv2']['kernel'][0, 2, 7, 11] == w[11, 7, 0, 2]
  np.testing.assert_array_equal(p['layer2_0']['downsample_conv']['kernel'][0, 0],
                                sd['layer2.0.downsample.0.weight'][:, :, 0, 0].T)
  np.testing.assert_array_equal(s['layer4_2']['bn3']['var'], sd['layer4.2.bn3.running_var'])
  np.testing.assert_array_equal(p['layer1_0']['downsample_bn']['scale'],
                                sd['layer1.0.downsample.1.weight'])
  np.testing.assert_array_equal(p['fc']['kernel'], sd['fc.weight'].T)
  # First conv + BN + ReLU of the converted tensors against numpy on one patch.
  x = rng.normal(size=(1, 4, 9, 9)).astype(np.float32)
  want = relu(bn(conv(x, sd['conv1.weight'], 2, 3), sd, 'bn1'))
  k = p['conv1']['kernel']
  xp = np.pad(x[0].transpose(1, 2, 0), ((3, 3), (3, 3), (0, 0)))
  y = np.einsum('ijc,ijco->o', xp[2:9, 4:11], k)  # output pixel (1, 2)
  y = (y - s['bn1']['mean']) / np.sqrt(s['bn1']['var'] + EPS) * p['bn1']['scale'] + p['bn1']['bias']
  np.testing.assert_allclose(relu(y), want[0, :, 1, 2], rtol=1e-5, atol=1e-5)
  with pytest.raises(DaslError, match='takes 4 input channels'):
    PC.convert_state_dict(read, '2dasl', in_channels=3)
  bad = dict(read)
  bad['conv1.weight'] = bad['conv1.weight'][:, :3]
  with pytest.raises(DaslError, match=r'conv1.weight has shape \(64, 3, 7, 7\)'):
    PC.convert_state_dict(bad, '2dasl')


def test_pool_needs_a_7_or_8_map():
  x = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(DaslError, match='7x7 or 8x8'):
    R.pool_features(x, 'avg7s2')


def test_wrong_kind_command_one_line(tmp_path, monkeypatch):
  rng = np.random.default_rng(7)
  sd = random_state_dict(M.torch_state_dict_shapes(0.5), rng)
  save_pth(tmp_path / 'x.pth', sd, monkeypatch)
  (tmp_path / 's.pkl').write_bytes(pickle.dumps({'mean': np.zeros(62), 'std': np.ones(62)}))
  r = subprocess.run([sys.executable, '-m', 'experiments.convert_checkpoint', '--from',
                      str(tmp_path / 'x.pth'), '--kind', '2dasl', '--param_stats',
                      str(tmp_path / 's.pkl'), '--out', str(tmp_path / 'o')],
                     cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1, r.stderr
  assert 'x.pth' in lines[0] and 'looks like 3DDFA_V2 MobileNetV1 x0.5 (--kind mb05)' in lines[0]


# --------------------------------------------------------------------------
# Real files at hand: mb05 through --kind auto, and the FaceBoxes weights as a
# wrong input.


@requires_assets('pretrained', 'mb05_120x120.pth')
@requires_assets('pretrained', 'FaceBoxesProd.pth')
def test_real_files_kinds():
  mb05 = PC.read_state_dict(asset_path('pretrained', 'mb05_120x120.pth'))
  assert PC.guess_kind(mb05)[0] == 'mb05'
  cfg, v = PC.convert_state_dict(mb05, 'mb05')
  np.testing.assert_array_equal(v['params']['conv1']['kernel'],
                                M.variables_from_torch(mb05, 0.5)['params']['conv1']['kernel'])
  assert (cfg.width, cfg.convention) == (0.5, 'v2')
  with pytest.raises(DaslError, match=r'looks like 3DDFA_V2 MobileNetV1 x0.5 \(--kind mb05\)'):
    PC.convert_state_dict(mb05, '3ddfa_v1')
  fb = PC.read_state_dict(asset_path('pretrained', 'FaceBoxesProd.pth'))
  assert PC.guess_kind(fb) == (None, 'the FaceBoxes face detector')
  with pytest.raises(DaslError, match=r'missing conv1.weight .*looks like the FaceBoxes'):
    PC.convert_state_dict(fb, 'mb1')
