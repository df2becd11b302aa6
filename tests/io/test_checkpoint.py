"""Model checkpoints: save/restore round trip, latest step, fallback, clear errors."""
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dasl_jax.io import checkpoint
from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError
from dasl_jax.models import ModelConfig


CFG = ModelConfig(arch='mobilenet', width=0.25, in_channels=3, convention='v2')


def _variables(cfg=CFG, seed=0):
  """Random variables of the right shapes, without compiling ``init``.

  (A jitted MobileNet init spends ~20 s compiling its RNG on this CPU.)
  """
  rng = np.random.default_rng(seed)
  shapes = checkpoint.expected_shapes(cfg, image_size=32)
  return jax.tree_util.tree_map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def _stats():
  rng = np.random.default_rng(1)
  return P.ParamStats(rng.normal(size=62).astype(np.float32),
                      rng.uniform(0.5, 2, 62).astype(np.float32), 'test')


def _assert_tree_equal(a, b):
  la, ta = jax.tree_util.tree_flatten(a)
  lb, tb = jax.tree_util.tree_flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip(tmp_path):
  v = _variables()
  checkpoint.save_model(tmp_path / 'w', CFG, v, _stats(), step=3)
  r = checkpoint.restore(tmp_path / 'w')
  assert r.model_config == CFG and r.step == 3 and r.flags is None
  _assert_tree_equal(r.variables, v)
  np.testing.assert_array_equal(r.param_stats.mean, _stats().mean)
  np.testing.assert_array_equal(r.param_stats.std, _stats().std)
  out = jax.jit(r.module.apply)(r.variables, jnp.zeros((2, 32, 32, 3)))
  assert out.shape == (2, 62)
  layout = json.loads((tmp_path / 'w' / 'model_config.json').read_text())
  assert layout['width'] == 0.25
  assert set(json.loads((tmp_path / 'w' / 'param_stats.json').read_text())) == {
      'mean', 'std', 'source'}


def _corrupt(step_dir: Path):
  """Truncate every data file of the step's variables item."""
  files = [f for f in (step_dir / 'variables').rglob('*') if f.is_file()
           and 'd' in f.parent.name]
  assert files
  for f in files:
    f.write_bytes(f.read_bytes()[:5])


def test_latest_step_and_fallback_when_corrupt(tmp_path, capsys):
  w = tmp_path / 'w'
  v0, v1 = _variables(seed=0), _variables(seed=1)
  checkpoint.save_model(w, CFG, v0, _stats(), step=1)
  # A training run's manager: extra items beside "variables", restore ignores them.
  mngr = checkpoint.checkpoint_manager(w)
  mngr.save(2, args=ocp.args.Composite(
      variables=ocp.args.StandardSave(v1),
      train_state=ocp.args.StandardSave({'step': np.int32(2), 'opt': np.ones(3)})))
  mngr.wait_until_finished()
  mngr.close()
  r = checkpoint.restore(w)
  assert r.step == 2
  _assert_tree_equal(r.variables, v1)
  r1 = checkpoint.restore(w, step=1)
  _assert_tree_equal(r1.variables, v0)
  _corrupt(w / 'checkpoints' / '2')
  r = checkpoint.restore(w)
  assert r.step == 1
  _assert_tree_equal(r.variables, v0)
  assert 'falling back' in capsys.readouterr().err
  with pytest.raises(DaslError, match='cannot read'):
    checkpoint.restore(w, step=2)


def test_errors(tmp_path):
  with pytest.raises(DaslError, match='not found'):
    checkpoint.restore(tmp_path / 'nothing')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(DaslError, match='not a model checkpoint'):
    checkpoint.restore(tmp_path / 'empty')
  w = tmp_path / 'w'
  checkpoint.save_model(w, CFG, _variables(), _stats())
  with pytest.raises(DaslError, match='already holds checkpoint step 0'):
    checkpoint.save_model(w, CFG, _variables(), _stats())
  with pytest.raises(DaslError, match='no checkpoint step 7'):
    checkpoint.restore(w, step=7)
  # Config says width 0.5 but the stored variables are width 0.25.
  cfg = json.loads((w / 'model_config.json').read_text())
  cfg['width'] = 0.5
  (w / 'model_config.json').write_text(json.dumps(cfg))
  with pytest.raises(DaslError, match='variable params/.* has shape .*width 0.5'):
    checkpoint.restore(w)
  cfg['in_channels'] = 4
  cfg['width'] = 0.25
  (w / 'model_config.json').write_text(json.dumps(cfg))
  with pytest.raises(DaslError, match='4 input channels'):
    checkpoint.restore(w)
  # Saving variables that do not fit the config is refused up front.
  with pytest.raises(DaslError, match='shape'):
    checkpoint.save_model(tmp_path / 'x', ModelConfig(width=0.5, in_channels=3),
                          _variables(), _stats())
  shutil.rmtree(w / 'checkpoints')
  with pytest.raises(DaslError, match='no checkpoints/'):
    checkpoint.restore(w)


def test_a_peer_file_given_as_checkpoint_names_the_path_typed(tmp_path, monkeypatch):
  """A .pth (through a symlink, as the assets often are) or an .onnx passed where a
  model folder goes: the hint shows the path as typed and the current command."""
  real = tmp_path / 'store' / 'mb05_120x120.pth'
  real.parent.mkdir()
  real.write_bytes(b'x')
  (tmp_path / 'link.pth').symlink_to(real)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(DaslError) as e:
    checkpoint.restore('link.pth')
  assert str(e.value) == ('link.pth: a PyTorch file, not a model directory; convert it first: '
                          'python -m experiments.convert_checkpoint --from link.pth --kind auto '
                          '--out DIR, then pass DIR')
  (tmp_path / 'm.onnx').write_bytes(b'x')
  with pytest.raises(DaslError, match='m.onnx: an ONNX model, not a model directory; pass it '
                                      'as --onnx m.onnx'):
    checkpoint.restore('m.onnx')


def test_unreadable_step_is_named_by_its_innermost_cause(tmp_path, capsys):
  """Orbax wraps TensorStore's error (which array, which byte range) in an exception
  whose text ends in the repr of a TensorStore method; the warning gives the cause."""
  def read(step):
    if step == 2:
      try:
        raise ValueError('OUT_OF_RANGE: Error reading "params.fc.kernel/0.0": Requested '
                         'byte range [0, 7370) is not valid for value of size 5')
      except ValueError as cause:
        raise Exception('Encountered error while reading array index: (slice(0, 32, 1),). '
                        'See full TensorStore details: <bound method '
                        'pybind11_detail_function_record.spec of TensorStore({...})>') from cause
    return 'ok'

  step, value, unreadable = checkpoint.newest_readable(tmp_path, [1, 2], read)
  assert (step, value) == (1, 'ok')
  [(s, msg)] = unreadable
  assert s == 2 and msg.startswith(f'{tmp_path / "2"}: cannot read checkpoint (ValueError: '
                                   'OUT_OF_RANGE: Error reading "params.fc.kernel/0.0"')
  assert 'bound method' not in msg
  assert msg in capsys.readouterr().err
