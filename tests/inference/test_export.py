"""jax.export artefacts reload without model code and match the jitted model; ONNX too."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dasl_jax import inference
from dasl_jax.io import checkpoint
from dasl_jax.inference import export
from dasl_jax.errors import DaslError
from tests.helpers.random_models import make_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  path = make_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny4', seed=3)
  restored = checkpoint.restore(path)
  return path, restored, inference.face_models(restored)


def test_exported_symbolic_batch_matches_predictor(tiny, tmp_path):
  path, restored, models = tiny
  exp, meta = export.export_model(restored, models.landmarks, flm='input')
  assert meta['batch'] == 'symbolic' and meta['inputs'] == ['crops', 'points18']
  f = export.save(exp, meta, tmp_path / 'm.jaxexport')
  # Reload in a fresh interpreter that never imports the model code.
  code = ('import sys, numpy as np, jax\n'
          'exp = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))\n'
          'rng = np.random.default_rng(0)\n'
          'for b in (1, 5):\n'
          '  c = rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8)\n'
          '  p = rng.uniform(30, 90, (b, 18, 2)).astype(np.float32)\n'
          '  w, q, l = exp.call(c, p)\n'
          '  np.savez(sys.argv[2] + f"_{b}.npz", c=c, p=p, w=w, q=q, l=l)\n'
          'assert not any(m.startswith(("dasl_jax", "flax")) for m in sys.modules)\n')
  subprocess.run([sys.executable, '-c', code, str(f), str(tmp_path / 'out')], check=True,
                 cwd=tmp_path, timeout=120)
  pred = inference.Predictor(restored, models.landmarks, batch_size=8)
  for b in (1, 5):
    d = np.load(tmp_path / f'out_{b}.npz')
    # The predictor takes 68 points; hand it 68 whose 18-point selection is d['p'].
    from dasl_jax.geometry import landmarks as L
    lms68 = np.linalg.lstsq(L.SEL18_MATRIX, d['p'].transpose(1, 0, 2).reshape(18, -1),
                            rcond=None)[0].reshape(68, b, 2).transpose(1, 0, 2)
    np.testing.assert_allclose(L.select18_np(lms68), d['p'], atol=1e-3)
    ref = pred.predict_crops(d['c'], lms68)
    np.testing.assert_allclose(d['w'], ref['whitened'], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d['l'], ref['lms68'], atol=1e-3)
    # 5e-5 of each parameter's range: the exported program with a symbolic batch
    # reduces in a different float32 order than the predictor's fixed-batch one
    # (2.1e-5 measured on CI's machine); a wrong layout or de-whitening is O(1).
    np.testing.assert_allclose(d['q'] / np.abs(ref['params']).max(0),
                               ref['params'] / np.abs(ref['params']).max(0), atol=5e-5)


def test_exported_bootstrap_and_load_errors(tiny, tmp_path):
  _, restored, models = tiny
  exp, meta = export.export_model(restored, models.landmarks, flm='bootstrap',
                                  bootstrap_iters=2, batch=2)
  f = export.save(exp, meta, tmp_path / 'b.jaxexport')
  loaded, meta2 = export.load(f)
  assert meta2['inputs'] == ['crops'] and meta2['bootstrap_iters'] == 2
  c = np.random.default_rng(1).integers(0, 256, (2, 120, 120, 3), dtype=np.uint8)
  ref = inference.Predictor(restored, models.landmarks, bootstrap_iters=2).predict_crops(c)
  np.testing.assert_allclose(np.asarray(loaded.call(c)[2]), ref['lms68'], atol=1e-3)
  (tmp_path / 'bad.jaxexport').write_bytes(b'nonsense')
  with pytest.raises(DaslError, match='not a jax.export artefact'):
    export.load(tmp_path / 'bad.jaxexport')


def test_onnx_matches_jax(tiny, tmp_path):
  """export.export_onnx (dasl_jax/inference/onnx.py; more in tests/inference/test_onnx_export.py):
  one file, two batch sizes, within 1e-4 of the output's range of the JAX function."""
  ort = pytest.importorskip('onnxruntime')
  _, restored, models = tiny
  f = export.export_onnx(restored, models.landmarks, tmp_path / 'm.onnx')
  sess = ort.InferenceSession(str(f), providers=['CPUExecutionProvider'])
  assert [o.name for o in sess.get_outputs()] == list(export.OUTPUTS)
  import jax
  fn = jax.jit(export.inference_function(restored, models.landmarks)[0])
  rng = np.random.default_rng(2)
  for b in (2, 5):
    c = rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8)
    p = rng.uniform(30, 90, (b, 18, 2)).astype(np.float32)
    got = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), (c, p))})
    ref = [np.asarray(a) for a in fn(c, p)]
    for g, r in zip(got, ref):
      np.testing.assert_allclose(g / np.abs(r).max(), r / np.abs(r).max(), atol=1e-4)
  with pytest.raises(DaslError, match='--flm bootstrap'):
    export.export_onnx(restored, models.landmarks, tmp_path / 'b.onnx', flm='bootstrap')


def test_bf16_dots_export_and_option_errors(tiny, tmp_path):
  """--dot_dtype bfloat16 (checkpoint.with_dot_dtype): the exported function follows the
  bf16 module, stays within bf16 rounding of float32, and is not identical to it."""
  _, restored, models = tiny
  bf = checkpoint.with_dot_dtype(restored, 'bfloat16')
  assert checkpoint.with_dot_dtype(restored, 'float32') is restored
  assert restored.module.dot_dtype is None and bf.module.dot_dtype is not None
  rng = np.random.default_rng(2)
  c = rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8)
  p = rng.uniform(30, 90, (3, 18, 2)).astype(np.float32)
  outs = {}
  for name, r in (('f32', restored), ('bf16', bf)):
    exp, _ = export.export_model(r, models.landmarks, flm='input', batch=3)
    outs[name] = np.asarray(exp.call(c, p)[0])  # whitened parameters
  rel = np.abs(outs['bf16'] - outs['f32']).max() / np.abs(outs['f32']).max()
  assert 0 < rel < 0.05, rel
  with pytest.raises(DaslError, match='must be one of'):
    checkpoint.with_dot_dtype(restored, 'float16')
  import dataclasses
  from dasl_jax.models.resnet import ResNet
  with pytest.raises(DaslError, match='only MobileNetV1'):
    checkpoint.with_dot_dtype(dataclasses.replace(restored, module=ResNet(18)), 'bfloat16')
