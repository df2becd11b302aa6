"""Torch-free .pth reader, the 3DDFA_V2 -> Flax converter, and the end-to-end match
with the released model's reference outputs on AFLW2000-3D."""
import collections
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.asset_marks import asset_path, requires_assets
from tests.helpers.torch_files import FakeStorage, FakeTensor, write_legacy, write_zip
from tests.helpers.train_runs import heavy_env
from dasl_jax.io import torch_pickle
from dasl_jax.errors import DaslError
from dasl_jax.models import mobilenet as M

REPO = Path(__file__).resolve().parents[2]
PTH = asset_path('pretrained', 'mb05_120x120.pth')


def _example():
  """A state dict with a shared storage, an offset and a transposed (strided) view."""
  rng = np.random.default_rng(0)
  a = rng.normal(size=24).astype(np.float32)
  b = np.arange(5, dtype=np.int64)
  sa, sb = FakeStorage('0', a), FakeStorage('1', b)
  sd = collections.OrderedDict()
  sd['module.w'] = FakeTensor(sa, 0, (2, 3, 2), (6, 2, 1))
  sd['module.wt'] = FakeTensor(sa, 12, (3, 4), (1, 3))  # transposed view of a[12:]
  sd['module.count'] = FakeTensor(sb, 4, (), ())
  expect = {'w': a[:12].reshape(2, 3, 2), 'wt': a[12:].reshape(4, 3).T,
            'count': np.array(4)}
  return {'epoch': 7, 'state_dict': sd}, [sa, sb], expect


@pytest.mark.parametrize('writer', [write_legacy, write_zip])
def test_reader_on_handwritten_files(tmp_path, monkeypatch, writer):
  obj, storages, expect = _example()
  path = tmp_path / 'x.pth'
  writer(path, obj, storages, monkeypatch)
  monkeypatch.undo()  # the reader must not need any torch module
  sd = torch_pickle.load_state_dict(path)
  assert sorted(sd) == sorted(expect)
  for k, v in expect.items():
    np.testing.assert_array_equal(sd[k], v)
    assert sd[k].dtype == v.dtype
  assert torch_pickle.load(path)['epoch'] == 7


def test_reader_errors(tmp_path, monkeypatch):
  with pytest.raises(DaslError, match='not found'):
    torch_pickle.load(tmp_path / 'missing.pth')
  obj, storages, _ = _example()
  path = tmp_path / 'x.pth'
  write_legacy(path, obj, storages, monkeypatch)
  monkeypatch.undo()
  raw = path.read_bytes()
  for cut in (10, len(raw) // 2, len(raw) - 5):
    (tmp_path / 't.pth').write_bytes(raw[:cut])
    with pytest.raises(DaslError, match='t.pth'):
      torch_pickle.load(tmp_path / 't.pth')
  (tmp_path / 'junk.pth').write_bytes(b'hello world, not a checkpoint')
  with pytest.raises(DaslError, match='junk.pth'):
    torch_pickle.load(tmp_path / 'junk.pth')


def test_reader_matches_torch_load(tmp_path):
  torch = pytest.importorskip('torch')
  sd = collections.OrderedDict(
      a=torch.randn(3, 4), b=torch.arange(6).reshape(2, 3).t(), c=torch.randn(5)[1:4],
      h=torch.randn(2, 2).half())
  for zip_format in (False, True):
    path = tmp_path / f'{zip_format}.pth'
    torch.save({'state_dict': sd}, path, _use_new_zipfile_serialization=zip_format)
    got = torch_pickle.load_state_dict(path)
    for k, v in sd.items():
      np.testing.assert_array_equal(got[k], v.numpy())
  if PTH.exists():
    want = torch.load(PTH, map_location='cpu', weights_only=False)['state_dict']
    got = torch_pickle.load_state_dict(PTH)
    assert len(got) == len(want) == 166
    for k, v in want.items():
      np.testing.assert_array_equal(got[k[len('module.'):]], v.numpy())


# --------------------------------------------------------------------------
# The converter.


def _fake_state_dict(width, rng):
  return {k: rng.normal(size=s).astype(np.float32)
          for k, s in M.torch_state_dict_shapes(width).items()}


def test_variables_from_torch_layout():
  rng = np.random.default_rng(0)
  sd = _fake_state_dict(0.25, rng)
  sd['fc_lm.weight'] = np.zeros((136, 256), np.float32)
  sd['bn1.num_batches_tracked'] = np.array(5)
  v = M.variables_from_torch(sd, 0.25)
  p, s = v['params'], v['batch_stats']
  # OIHW -> HWIO, element by element.
  w = sd['conv1.weight']
  assert p['conv1']['kernel'][2, 0, 1, 5] == w[5, 1, 2, 0]
  d = sd['dw3_2.conv_dw.weight']
  assert p['dw3_2']['conv_dw']['kernel'][1, 2, 0, 7] == d[7, 0, 1, 2]
  q = sd['dw6.conv_sep.weight']
  assert p['dw6']['conv_sep']['kernel'][0, 0, 3, 9] == q[9, 3, 0, 0]
  np.testing.assert_array_equal(p['fc_param']['kernel'], sd['fc_param.weight'].T)
  np.testing.assert_array_equal(p['dw5_3']['bn_sep']['scale'], sd['dw5_3.bn_sep.weight'])
  np.testing.assert_array_equal(s['dw5_3']['bn_dw']['var'], sd['dw5_3.bn_dw.running_var'])
  # 4 channels: the FLM channel gets zero weights.
  v4 = M.variables_from_torch(sd, 0.25, in_channels=4)
  k4 = v4['params']['conv1']['kernel']
  assert k4.shape == (3, 3, 4, 8) and not k4[:, :, 3].any()
  np.testing.assert_array_equal(k4[:, :, :3], p['conv1']['kernel'])


def test_converter_errors():
  rng = np.random.default_rng(0)
  sd = _fake_state_dict(0.5, rng)
  with pytest.raises(DaslError, match=r'conv1.weight has shape .* width 1.0'):
    M.variables_from_torch(sd, 1.0)
  bad = dict(sd)
  del bad['dw4_1.bn_sep.running_var']
  with pytest.raises(DaslError, match='missing dw4_1.bn_sep.running_var'):
    M.variables_from_torch(bad, 0.5)
  bad = dict(sd, **{'layer1.0.conv1.weight': np.zeros((64, 64, 3, 3), np.float32)})
  with pytest.raises(DaslError, match='unexpected tensor layer1.0.conv1.weight'):
    M.variables_from_torch(bad, 0.5)


def _run(module, *args, env=None):
  return subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=600, env=env)


def test_convert_command_bad_input(tmp_path, monkeypatch):
  r = _run('experiments.convert_checkpoint', '--from_3ddfa_v2', tmp_path / 'none.pth',
           '--param_stats', tmp_path / 'none.pkl', '--out', tmp_path / 'o')
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith('error: ')
  # A truncated legacy file, and a wrong-architecture one (width 0.25 as 0.5).
  obj, storages, _ = _example()
  write_legacy(tmp_path / 'x.pth', obj, storages, monkeypatch)
  monkeypatch.undo()
  (tmp_path / 't.pth').write_bytes((tmp_path / 'x.pth').read_bytes()[:-7])
  (tmp_path / 'stats.pkl').write_bytes(pickle.dumps({'mean': np.zeros(62), 'std': np.ones(62)}))
  r = _run('experiments.convert_checkpoint', '--from_3ddfa_v2', tmp_path / 't.pth',
           '--param_stats', tmp_path / 'stats.pkl', '--out', tmp_path / 'o')
  assert r.returncode == 2 and 'truncated' in r.stderr, r.stderr
  r = _run('experiments.convert_checkpoint', '--from_3ddfa_v2', tmp_path / 'x.pth',
           '--param_stats', tmp_path / 'stats.pkl', '--out', tmp_path / 'o')
  assert r.returncode == 2 and 'missing conv1.weight' in r.stderr, r.stderr
  assert len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------
# End to end: converter + model + evaluate on the 2,000 real crops.


@requires_assets('pretrained', 'mb05_120x120.pth')
@requires_assets('pretrained', 'mb05_reference_lms68_crop.npy')
@requires_assets('aflw2000-3d', 'AFLW2000-3D_crop.list')
@requires_assets('bfm', 'keypoints68')
def test_converted_mb05_reproduces_reference(tmp_path):
  out = tmp_path / 'mb05'
  r = _run('experiments.convert_checkpoint', '--from_3ddfa_v2', PTH, '--out', out)
  assert r.returncode == 0, r.stderr
  cfg = json.loads((out / 'model_config.json').read_text())
  assert cfg['convention'] == 'v2' and cfg['in_channels'] == 3 and cfg['width'] == 0.5
  r = _run('experiments.evaluate', '--checkpoint', out, '--aflw2000_dir',
           asset_path('aflw2000-3d'), '--bfm', asset_path('bfm'), '--batch_size', 200,
           '--json', tmp_path / 'r.json', '--predictions_out', tmp_path / 'lms.npy',
           env=heavy_env())  # 2,000 forwards: -O1
  assert r.returncode == 0, r.stderr
  lms = np.load(tmp_path / 'lms.npy')
  ref = np.load(asset_path('pretrained', 'mb05_reference_lms68_crop.npy'))
  assert lms.shape == ref.shape == (2000, 2, 68)
  assert np.abs(lms - ref).max() < 0.05
  res = json.loads((tmp_path / 'r.json').read_text())
  o = res['original']
  assert o['n'] == 2000 and abs(o['mean_of_bins'] - 3.792) < 0.005
  np.testing.assert_allclose(o['bins'], [2.925, 3.667, 4.784], atol=0.005)
  assert abs(o['mean'] - 3.350) < 0.005
  assert abs(res['reannotated']['mean_of_bins'] - 3.022) < 0.005
  assert '3.792' in r.stdout
