"""The ONNX writer (dasl_jax/inference/onnx.py) against the JAX inference function.

Reference: ``export.inference_function`` (the Flax module through jax), an
independent implementation of the same graph. Random batch-norm statistics so
that folding BN into the convolutions is exercised; FLM points include ones
outside the crop and non-finite ones.
"""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

from dasl_jax.io import checkpoint  # noqa: E402
from dasl_jax.inference import export
from dasl_jax.inference import onnx as onnx_export
from dasl_jax.face_model.synthetic import build_synthetic_model  # noqa: E402
from dasl_jax.errors import DaslError  # noqa: E402
from dasl_jax.models import ModelConfig, create_regressor  # noqa: E402
from tests.helpers.asset_marks import requires_assets  # noqa: E402
from tests.helpers.random_models import random_variables, tiny_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _restored(cfg, seed=0):
  rng = np.random.default_rng(seed + 100)
  v = random_variables(cfg, seed)

  def perturb(path, a):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']"):
      return rng.uniform(0.5, 2.0, a.shape).astype(np.float32)
    if name.endswith("['scale']"):
      return rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
    if name.endswith("['mean']") or (name.endswith("['bias']") and 'fc' not in name):
      return rng.normal(0, 0.1, a.shape).astype(np.float32)
    return a
  v = jax.tree_util.tree_map_with_path(perturb, v)
  return checkpoint.Restored(create_regressor(cfg), v, cfg, tiny_stats(), None)


@pytest.fixture(scope='module')
def lm_model():
  return build_synthetic_model().landmark_model()


def _inputs(b, seed=0):
  rng = np.random.default_rng(seed)
  c = rng.integers(0, 256, (b, 120, 120, 3), dtype=np.uint8)
  p = rng.uniform(20, 100, (b, 18, 2)).astype(np.float32)
  p[0, 0] = [-5.0, 130.0]  # clamped into the crop
  p[0, 1] = [np.nan, 40.0]  # not drawn
  p[-1, 2] = [np.inf, 50.0]
  p[-1, 3] = [119.999, 0.0]
  return c, p


def _compare(got, ref, tol=1e-4, names=export.OUTPUTS):
  """max |diff| / max |ref| per output (the issue's 'relative to range')."""
  errs = {}
  for name, g, r in zip(names, got, ref):
    r = np.asarray(r)
    assert g.shape == r.shape, (name, g.shape, r.shape)
    errs[name] = float(np.abs(g - r).max() / np.abs(r).max())
  assert max(errs.values()) < tol, errs
  return errs


@pytest.mark.parametrize('cfg', [
    # 'grouped' depthwise: the JAX reference compiles faster (same variables and
    # function as 'shifted'; the real mb05 below runs the CPU default).
    ModelConfig(arch='mobilenet', width=0.25, in_channels=3, convention='v2',
                depthwise='grouped'),
    ModelConfig(arch='mobilenet', width=0.25, in_channels=4, convention='v1',
                depthwise='grouped'),
    ModelConfig(arch='resnet', depth=18, resnet_width=8, in_channels=4, convention='v2'),
    ModelConfig(arch='resnet', depth=50, resnet_width=4, in_channels=3, convention='v1',
                resnet_pool='avg7s2'),
    ModelConfig(arch='resnet22', in_channels=3, convention='v2'),
], ids=['mobilenet3', 'mobilenet4', 'resnet18_4', 'resnet50_3', 'resnet22_3'])
def test_onnx_matches_jax_inference_function(cfg, lm_model):
  restored = _restored(cfg)
  model = onnx_export.build_model(restored, lm_model)
  assert [i.name for i in model.graph.input] == (['crops', 'points18'] if cfg.in_channels == 4
                                                 else ['crops'])
  assert [o.name for o in model.graph.output] == list(export.OUTPUTS)
  sess = onnx_export.session(model)
  fn, names = export.inference_function(restored, lm_model)
  c, p = _inputs(3, seed=1)
  args = (c, p)[:len(names)]
  ref = [np.asarray(r) for r in jax.jit(fn)(*args)]
  # One file, two batch sizes (symbolic batch).
  _compare(sess.run(list(export.OUTPUTS), dict(zip(names, args))), ref)
  _compare(sess.run(list(export.OUTPUTS), dict(zip(names, [a[1:2] for a in args]))),
           [r[1:2] for r in ref])


def test_unknown_arch_is_one_line(lm_model):
  import dataclasses
  cfg = dataclasses.replace(ModelConfig(), arch='vgg')
  with pytest.raises(DaslError, match="no ONNX writer for arch 'vgg'"):
    onnx_export.build_model(checkpoint.Restored(None, {}, cfg, tiny_stats(), None), lm_model)


def test_flm_channel_matches(lm_model):
  """The FLM sub-graph alone: exactly landmarks.flm (a wrong pixel is a 2.0 error)."""
  from dasl_jax.geometry import landmarks as L
  g = onnx_export._Graph()
  out = g.op('Identity', [onnx_export._flm(g, 'points18', 120)], out='flm')
  h = g.h
  f32 = g.onnx.TensorProto.FLOAT
  graph = h.make_graph(g.nodes, 'flm', [h.make_tensor_value_info('points18', f32, ['b', 18, 2])],
                       [h.make_tensor_value_info(out, f32, ['b', 120, 120, 1])], g.inits)
  model = h.make_model(graph, opset_imports=[h.make_opsetid('', onnx_export.OPSET)])
  model.ir_version = 8
  _, p = _inputs(4, seed=7)
  got = onnx_export.session(model).run(None, {'points18': p})[0][..., 0]
  np.testing.assert_array_equal(got, np.asarray(L.flm(p)))


def test_onnx_predictor_matches_predictor_and_export_command(tmp_path, request):
  """OnnxPredictor vs inference.Predictor (detector points, masks, bootstrap), and
  experiments.export --format onnx writes a file that loads and reports its error."""
  from dasl_jax import inference
  from tests.helpers.random_models import make_checkpoint
  path = make_checkpoint(tmp_path / 'tiny4', seed=3)
  # The command (writes the .onnx and checks it) runs beside the in-process checks.
  out = tmp_path / 'm.onnx'
  cmd = subprocess.Popen([sys.executable, '-m', 'experiments.export', '--checkpoint', str(path),
                          '--out', str(out), '--format', 'onnx'], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  request.addfinalizer(lambda: cmd.poll() is None and (cmd.kill(), cmd.wait()))
  restored = checkpoint.restore(path)
  models = inference.face_models(restored)
  jp = inference.Predictor(restored, models.landmarks, batch_size=4, bootstrap_iters=2)
  # batch_size 3: the 4 crops are split in two calls.
  op = onnx_export.OnnxPredictor(restored, models.landmarks, batch_size=3, bootstrap_iters=2)
  assert op.in_channels == 4 and op.convention == jp.convention
  np.testing.assert_allclose(op.mean_lms68, jp.mean_lms68, atol=1e-4)
  rng = np.random.default_rng(5)
  c = rng.integers(0, 256, (4, 120, 120, 3), dtype=np.uint8)
  lms = jp.mean_lms68[None] + rng.normal(0, 2, (4, 68, 2))
  mask = (rng.uniform(size=(4, 18)) > 0.3).astype(np.float32)
  pts = rng.uniform(30, 90, (4, 18, 2)).astype(np.float32)
  keys = export.OUTPUTS + ('pose',)
  for kw in ({'lms68': lms}, {'points18': pts, 'mask18': mask}, {}):
    ref, got = jp.predict_crops(c, **kw), op.predict_crops(c, **kw)
    assert set(got) == set(ref)
    _compare([got[k] for k in keys], [ref[k] for k in keys], names=keys)
  assert op.predict_crops(c[:0])['lms68'].shape == (0, 68, 2)
  with pytest.raises(DaslError, match='crops: expected'):
    op.predict_crops(c[..., :2])
  # inference.Runner(backend='onnxruntime') (experiments.predict --backend): its faces
  # are the JAX predictor's on the same crops (refine 0: one pass from the boxes, so
  # the 4-channel model's FLM is the bootstrapped one; test_backends covers refine).
  import cv2
  img = np.full((200, 300, 3), 40, np.uint8)
  cv2.circle(img, (80, 100), 50, (150, 170, 200), -1)
  cv2.circle(img, (220, 100), 45, (140, 160, 190), -1)
  boxes = tmp_path / 'boxes.json'
  boxes.write_text('{"two.png": [[30, 50, 130, 150, 0.9], [175, 55, 265, 145]]}')
  runner = inference.Runner(path, tmp_path / 'out', boxes=str(boxes), meshes=False,
                            overlay=False, batch_size=4, backend='onnxruntime', refine=0)
  assert isinstance(runner.predictor, onnx_export.OnnxPredictor)
  faces, _ = runner.faces(img, 'two.png')
  assert len(faces) == 2 and all(f.flm == 'bootstrap' for f in faces)
  ref = jp.predict_crops(np.stack([f.crop for f in faces]))
  _compare([np.stack([f.params for f in faces]), np.stack([f.lms68_crop for f in faces])],
           [ref['params'], ref['lms68']], names=('params', 'lms68'))
  for kw, want in (({'backend': 'torch'}, '--backend must be one of jax, onnxruntime'),
                   ({'backend': 'onnxruntime', 'dot_dtype': 'bfloat16'}, 'only with --backend jax')):
    with pytest.raises(DaslError, match=want):
      inference.Runner(path, tmp_path / 'out', boxes=str(boxes), **kw)
  r = cmd.communicate(timeout=300)
  assert cmd.returncode == 0, r[1][-2000:]
  assert 'onnxruntime' in r[0] and out.exists()
  sess = onnx_export.session(out)
  assert [i.name for i in sess.get_inputs()] == ['crops', 'points18']
  with pytest.raises(DaslError, match='ONNX model not found'):
    onnx_export.session(tmp_path / 'missing.onnx')
  (tmp_path / 'bad.onnx').write_bytes(b'nonsense')
  with pytest.raises(DaslError, match='bad.onnx: onnxruntime cannot load'):
    onnx_export.session(tmp_path / 'bad.onnx')


@requires_assets('pretrained', 'mb05_120x120.pth')
@requires_assets('pretrained', 'param_mean_std_62d_120x120.pkl')
@requires_assets('bfm', 'keypoints68')
def test_real_mb05_matches(tmp_path_factory):
  """3DDFA_V2's mb05 converted: ONNX vs JAX on random crops (3 channels, BFM landmarks)."""
  from dasl_jax import assets, inference
  pth = assets.assets_dir() / 'pretrained' / 'mb05_120x120.pth'
  out = tmp_path_factory.mktemp('mb05') / 'mb05_onnx'
  r = subprocess.run([sys.executable, '-m', 'experiments.convert_checkpoint', '--from_3ddfa_v2',
                      str(pth), '--out', str(out)], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, env=dict(os.environ))
  if r.returncode != 0:
    pytest.fail(f'convert_checkpoint failed: {r.stderr[-1500:]}')
  restored = checkpoint.restore(out)
  models = inference.face_models(restored)
  sess = onnx_export.session(onnx_export.build_model(restored, models.landmarks))
  fn, names = export.inference_function(restored, models.landmarks)
  assert names == ('crops',)
  c, _ = _inputs(4, seed=11)
  got = sess.run(list(export.OUTPUTS), {'crops': c})
  errs = _compare(got, fn(c))
  print('mb05 onnx vs jax (max |diff| / max |ref|):', errs)


def test_faceboxes_network_matches():
  """build_faceboxes vs faceboxes.FaceBoxesNet: the released weights when present
  (else random ones with random BN statistics), a non-square image, batch 2."""
  from dasl_jax.inference import faceboxes as fb
  w = fb.default_weights()
  if w.exists():
    variables = fb.load_variables(w)
  else:
    rng = np.random.default_rng(0)
    variables = {col: fb._unflatten({
        p: (rng.uniform(0.5, 2.0, s) if p[-1] == 'var' else rng.normal(0, 0.1, s))
        .astype(np.float32) for p, s in shapes.items()})
        for col, shapes in fb.variable_shapes().items()}
  sess = onnx_export.session(onnx_export.build_faceboxes(variables))
  rng = np.random.default_rng(1)
  x = (rng.integers(0, 256, (2, 128, 192, 3)) - np.float32(fb.MEAN_BGR)).astype(np.float32)
  loc, scores = jax.jit(fb.FaceBoxesNet().apply)(variables, x)
  got = sess.run(['loc', 'scores'], {'image': x})
  assert got[0].shape == (2, len(fb.prior_boxes(128, 192)), 4)
  _compare(got, [loc, scores], names=('loc', 'scores'))
