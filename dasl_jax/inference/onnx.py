"""ONNX models of the inference function, written from the Flax variables.

The graph is the one of :func:`dasl_jax.inference.export.inference_function` (same inputs,
outputs and names), built node by node with ``onnx.helper`` (no tracing, no
jax2onnx: that pins orbax-checkpoint < 0.11.37, and this package needs 0.12)::

  crops (b, 120, 120, 3) uint8 BGR [, points18 (b, 18, 2) float32 crop pixels]
    -> whitened (b, 62), params (b, 62), lms68 (b, 68, 2) crop pixels

``b`` is a symbolic dimension: one file serves every batch size.

Inside: ``(x - 127.5) / 128`` (``inputs.normalize_image``); for 4-channel
models the FLM channel of ``landmarks.flm`` (each finite point's pixel
``floor(x), floor(y)`` clamped into the crop set to +1, the rest -1) as an
equality against the 14,400 pixel indices reduced over the 18 points; NHWC ->
NCHW; the network (MobileNetV1: grouped depthwise ``Conv``; ResNet-18/34/50,
3DDFA_V2's resnet22)
with inference batch norm folded into the preceding convolution's weights and
bias, ``GlobalAveragePool`` and ``Gemm``; de-whitening; the 68 landmarks as
``u + alpha @ W`` of the 68-row morphable model, ``fR @ x + t`` and the pixel
y-flip of the checkpoint's convention (``camera.to_crop_pixels``).

A 4-channel model takes the FLM points as an input (``flm='input'`` of
``export.inference_function``); the self-bootstrapped FLM loop runs on the host
(:class:`OnnxPredictor`). Visibility masks: a point that is not to be drawn is
passed as NaN (non-finite points are not drawn, as in ``landmarks.flm``).
MobileNet's optional bf16 products (``--dot_dtype``) have no ONNX counterpart:
the graph is float32.

:class:`OnnxPredictor` runs such a model with onnxruntime behind
``inference.Predictor``'s ``predict_crops``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.geometry import landmarks as L
from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError

OUTPUTS = ('whitened', 'params', 'lms68')
OPSET = 17
BATCH = 'b'
# Constants of a regressor graph under fixed names, so that a file alone gives back
# the whitening and the 68-landmark model (:func:`read_regressor`): the int8 model
# keeps them in float32 (only convolutions and the linear head are quantized).
PARAM_MEAN, PARAM_STD = 'param_mean', 'param_std'
LM_U, LM_BASIS = 'lm_u', 'lm_basis'
# Metadata key and value that mark a regressor written here.
KIND_KEY, KIND = 'dasl_jax', 'regressor'


def _onnx():
  try:
    import onnx
    from onnx import helper
  except ImportError:
    raise DaslError('ONNX export needs the onnx package (pip install -r requirements.txt)') \
        from None
  return onnx, helper


class _Graph:
  """Nodes and initialisers with unique names."""

  def __init__(self):
    self.onnx, self.h = _onnx()
    self.nodes, self.inits, self._n = [], [], 0

  def name(self, base):
    self._n += 1
    return f'{base}_{self._n}'

  def const(self, value, base='c', dtype=np.float32, fixed=None):
    n = fixed or self.name(base)
    self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), n))
    return n

  def op(self, op_type, inputs, base=None, out=None, **attrs):
    out = out or self.name(base or op_type.lower())
    self.nodes.append(self.h.make_node(op_type, list(inputs), [out], **attrs))
    return out

  def slice(self, x, starts, ends, axes):
    return self.op('Slice', [x, self.const(starts, 'starts', np.int64),
                             self.const(ends, 'ends', np.int64),
                             self.const(axes, 'axes', np.int64)])

  def reshape(self, x, shape):
    return self.op('Reshape', [x, self.const(shape, 'shape', np.int64)])


# ----------------------------------------------------------------------------
# Network layers (variables in Flax's layout: HWIO kernels, BN scale/bias/mean/var).


def _fold_bn(kernel_oihw, bn_params, bn_stats, eps):
  """Conv weight (O, I, kh, kw) followed by inference BN -> (weight, bias)."""
  a = np.asarray(bn_params['scale'], np.float64) / np.sqrt(
      np.asarray(bn_stats['var'], np.float64) + eps)
  w = np.asarray(kernel_oihw, np.float64) * a[:, None, None, None]
  b = np.asarray(bn_params['bias'], np.float64) - np.asarray(bn_stats['mean'], np.float64) * a
  return w.astype(np.float32), b.astype(np.float32)


def _conv_bn(g, x, kernel_hwio, params, stats, bn, stride, pad, eps, relu, group=1):
  """Conv (HWIO kernel; (kh, kw, 1, C) when depthwise) + folded BN [+ ReLU]."""
  k = np.asarray(kernel_hwio)
  w, b = _fold_bn(k.transpose(3, 2, 0, 1), params[bn], stats[bn], eps)
  y = g.op('Conv', [x, g.const(w, 'w'), g.const(b, 'b')], 'conv',
           kernel_shape=list(k.shape[:2]), strides=[stride, stride], pads=[pad] * 4,
           group=group)
  return g.op('Relu', [y]) if relu else y


def _dense(g, x, p):
  return g.op('Gemm', [x, g.const(p['kernel'], 'fc_w'), g.const(p['bias'], 'fc_b')], 'fc')


def _mobilenet(g, x, variables, cfg):
  from dasl_jax.models import mobilenet as mb
  params, stats = variables['params'], variables['batch_stats']
  eps = mb.BN_EPS
  x = _conv_bn(g, x, params['conv1']['kernel'], params, stats, 'bn1', 2, 1, eps, True)
  for name, _, stride in mb.BLOCKS:
    p, s = params[name], stats[name]
    k = np.asarray(p['conv_dw']['kernel'])
    x = _conv_bn(g, x, k, p, s, 'bn_dw', stride, 1, eps, True, group=k.shape[-1])
    x = _conv_bn(g, x, p['conv_sep']['kernel'], p, s, 'bn_sep', 1, 0, eps, True)
  x = g.op('Flatten', [g.op('GlobalAveragePool', [x])], axis=1)
  return _dense(g, x, params['fc_param'])


def _res_block(g, x, p, s, st, bottleneck, eps):
  """resnet.BasicBlock / Bottleneck (torchvision v1.5: the stride on the 3x3)."""
  if bottleneck:
    y = _conv_bn(g, x, p['conv1']['kernel'], p, s, 'bn1', 1, 0, eps, True)
    y = _conv_bn(g, y, p['conv2']['kernel'], p, s, 'bn2', st, 1, eps, True)
    y = _conv_bn(g, y, p['conv3']['kernel'], p, s, 'bn3', 1, 0, eps, False)
  else:
    y = _conv_bn(g, x, p['conv1']['kernel'], p, s, 'bn1', st, 1, eps, True)
    y = _conv_bn(g, y, p['conv2']['kernel'], p, s, 'bn2', 1, 1, eps, False)
  if 'downsample_conv' in p:
    x = _conv_bn(g, x, p['downsample_conv']['kernel'], p, s, 'downsample_bn', st, 0,
                 eps, False)
  return g.op('Relu', [g.op('Add', [x, y])])


def _resnet(g, x, variables, cfg):
  from dasl_jax.models import resnet as rn
  params, stats = variables['params'], variables['batch_stats']
  eps = rn.BN_EPS
  if cfg.depth not in rn.STAGES:
    raise DaslError(f'model config: ResNet depth must be one of {sorted(rn.STAGES)}, '
                    f'got {cfg.depth}')
  x = _conv_bn(g, x, params['conv1']['kernel'], params, stats, 'bn1', 2, 3, eps, True)
  x = g.op('MaxPool', [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
  for si, (n, stride) in enumerate(zip(rn.STAGES[cfg.depth], rn.STRIDES)):
    for bi in range(n):
      name = f'layer{si + 1}_{bi}'
      x = _res_block(g, x, params[name], stats[name], stride if bi == 0 else 1,
                     cfg.depth == 50, eps)
  pool = getattr(cfg, 'resnet_pool', 'mean')
  if pool == 'avg7s2':  # 2DASL's AvgPool2d(7, stride=2) on the 8x8 map: its top-left 7x7
    x = g.slice(x, [0, 0], [7, 7], [2, 3])
  elif pool != 'mean':
    raise DaslError(f'model config: no ONNX writer for resnet_pool {pool!r}')
  x = g.op('Flatten', [g.op('GlobalAveragePool', [x])], axis=1)
  return _dense(g, x, params['fc'])


def _resnet22(g, x, variables, cfg):
  """3DDFA_V2's resnet22 (resnet.ResNet22)."""
  from dasl_jax.models import resnet as rn
  params, stats = variables['params'], variables['batch_stats']
  eps = rn.BN_EPS
  x = _conv_bn(g, x, params['conv1']['kernel'], params, stats, 'bn1', 2, 2, eps, True)
  x = _conv_bn(g, x, params['conv2']['kernel'], params, stats, 'bn2', 1, 1, eps, True)
  for si, (n, _) in enumerate(rn.R22_STAGES):
    for bi in range(n):
      name = f'layer{si + 1}_{bi}'
      x = _res_block(g, x, params[name], stats[name], 2 if bi == 0 else 1, False, eps)
  x = g.op('Flatten', [g.op('GlobalAveragePool', [x])], axis=1)
  return _dense(g, x, params['conv_param'])


# ----------------------------------------------------------------------------
# Input and output stages.


def _flm(g, points, size):
  """points (b, 18, 2) -> (b, size, size, 1): landmarks.flm without a mask."""
  bad = g.op('Or', [g.op('IsNaN', [points]), g.op('IsInf', [points])])
  finite_xy = g.op('Cast', [g.op('Not', [bad])], to=1)  # (b, K, 2) 0/1
  finite = g.op('ReduceMin', [finite_xy], axes=[-1], keepdims=1)  # (b, K, 1)
  pts = g.op('Where', [bad, g.const(0.0), points])
  xy = g.op('Clip', [g.op('Floor', [pts]), g.const(0.0), g.const(float(size - 1))])
  # Pixel index x + size * y, exact in float32 (< 2^24).
  flat = g.op('MatMul', [xy, g.const([[1.0], [float(size)]], 'rowcol')])  # (b, K, 1)
  hits = g.op('Cast', [g.op('Equal', [flat, g.const(np.arange(size * size), 'pix')])], to=1)
  on = g.op('ReduceMax', [g.op('Mul', [hits, finite])], axes=[1], keepdims=0)  # (b, size^2)
  m = g.op('Sub', [g.op('Mul', [on, g.const(2.0)]), g.const(1.0)])  # +1 on, -1 off
  return g.reshape(m, [-1, size, size, 1])


def _landmarks(g, p, lm_model, convention, size):
  """params (b, 62) -> (b, 68, 2) crop pixels (morphable_model.landmarks2d)."""
  u = np.asarray(lm_model.u, np.float32)  # (204,)
  basis = np.concatenate([np.asarray(lm_model.w_shp, np.float32),
                          np.asarray(lm_model.w_exp, np.float32)], axis=1).T  # (50, 204)
  alpha = g.slice(p, [P.SHAPE.start], [P.EXP.stop], [1])
  flat = g.op('Add', [g.op('MatMul', [alpha, g.const(basis, fixed=LM_BASIS)]),
                      g.const(u, fixed=LM_U)])
  pts = g.reshape(flat, [-1, u.shape[0] // 3, 3])  # (b, 68, 3)
  pose = g.reshape(g.slice(p, [0], [P.N_POSE], [1]), [-1, 3, 4])
  fr = g.slice(pose, [0, 0], [2, 3], [1, 2])  # rows x, y of fR: (b, 2, 3)
  t = g.slice(pose, [0, 3], [2, 4], [1, 2])  # (b, 2, 1)
  cam = g.op('MatMul', [pts, g.op('Transpose', [fr], perm=[0, 2, 1])])  # (b, 68, 2)
  cam = g.op('Add', [cam, g.op('Transpose', [t], perm=[0, 2, 1])])
  camera._check_convention(convention)
  off = [0.0, size + 1.0] if convention == 'v1' else [-1.0, float(size)]
  return g.op('Add', [g.op('Mul', [cam, g.const([1.0, -1.0])]), g.const(off)],
              out='lms68')


def build_model(restored, landmark_model):
  """The ONNX ``ModelProto`` of ``export.inference_function(restored, landmark_model)``.

  Args:
    restored: ``checkpoint.restore`` output (module, variables, model_config,
      param_stats), or any object with those attributes.
    landmark_model: morphable model; its 68 landmark rows are used.
  """
  onnx, helper = _onnx()
  cfg = restored.model_config
  size = camera.CROP_SIZE
  g = _Graph()
  f32, u8 = onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8
  ins = [helper.make_tensor_value_info('crops', u8, [BATCH, size, size, 3])]
  x = g.op('Div', [g.op('Sub', [g.op('Cast', ['crops'], to=f32), g.const(127.5)]),
                   g.const(128.0)], 'normalized')
  if cfg.in_channels == 4:
    ins.append(helper.make_tensor_value_info('points18', f32, [BATCH, 18, 2]))
    x = g.op('Concat', [x, _flm(g, 'points18', size)], axis=-1)
  elif cfg.in_channels != 3:
    raise DaslError(f'model config: in_channels must be 3 or 4, got {cfg.in_channels}')
  x = g.op('Transpose', [x], perm=[0, 3, 1, 2], base='nchw')
  variables = _numpy_tree(restored.variables)
  if cfg.arch == 'mobilenet':
    w = _mobilenet(g, x, variables, cfg)
  elif cfg.arch == 'resnet':
    w = _resnet(g, x, variables, cfg)
  elif cfg.arch == 'resnet22':
    w = _resnet22(g, x, variables, cfg)
  else:
    raise DaslError(f'model config: no ONNX writer for arch {cfg.arch!r}')
  w = g.op('Identity', [w], out='whitened')
  stats = restored.param_stats
  p = g.op('Add', [g.op('Mul', [w, g.const(stats.std, fixed=PARAM_STD)]),
                   g.const(stats.mean, fixed=PARAM_MEAN)], out='params')
  _landmarks(g, p, landmark_model.landmark_model(), cfg.convention, size)
  outs = [helper.make_tensor_value_info('whitened', f32, [BATCH, cfg.num_params]),
          helper.make_tensor_value_info('params', f32, [BATCH, cfg.num_params]),
          helper.make_tensor_value_info('lms68', f32, [BATCH, 68, 2])]
  graph = helper.make_graph(g.nodes, f'dasl_{cfg.arch}', ins, outs, g.inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                            producer_name='dasl_jax.inference.onnx')
  model.ir_version = 8  # readable by onnxruntime >= 1.10
  from dasl_jax.face_model.bfm import checkpoint_face_model
  meta = {KIND_KEY: KIND, 'convention': cfg.convention, 'in_channels': str(cfg.in_channels),
          'arch': cfg.arch, 'param_stats_source': str(stats.source),
          'face_model': checkpoint_face_model(getattr(restored, 'flags', None)),
          'quantization': 'none',
          'doc': 'crops: (b, 120, 120, 3) uint8 BGR; points18: (b, 18, 2) float32 crop '
                 'pixels (NaN: not drawn); whitened, params: (b, 62); lms68: (b, 68, 2) '
                 'crop pixels'}
  helper.set_model_props(model, meta)
  onnx.checker.check_model(model)
  return model


# ----------------------------------------------------------------------------
# FaceBoxes (the detector's network; prior boxes, decoding and NMS stay on the host).


def _fb_conv_bn(g, x, v, stride, crelu=False):
  """faceboxes.ConvBN: conv (no bias) + folded BN, ReLU or CReLU."""
  from dasl_jax.inference import faceboxes as fb
  k = np.asarray(v['p']['conv']['kernel'])
  w, b = _fold_bn(k.transpose(3, 2, 0, 1), v['p']['bn'], v['s']['bn'], fb.BN_EPS)
  p = k.shape[0] // 2
  y = g.op('Conv', [x, g.const(w, 'w'), g.const(b, 'b')], 'conv',
           kernel_shape=list(k.shape[:2]), strides=[stride, stride], pads=[p] * 4)
  if crelu:
    y = g.op('Concat', [y, g.op('Neg', [y])], axis=1)
  return g.op('Relu', [y])


def build_faceboxes(variables):
  """ONNX ``ModelProto`` of ``faceboxes.FaceBoxesNet`` from its Flax variables.

  Input ``image`` (b, h, w, 3) float32 BGR minus ``faceboxes.MEAN_BGR`` (h, w
  symbolic); outputs ``loc`` (b, P, 4) box offsets and ``scores`` (b, P) face
  probabilities in :func:`faceboxes.prior_boxes` order (decode and select on
  the host with ``faceboxes.decode`` / ``select``).
  """
  onnx, helper = _onnx()
  v = _numpy_tree(variables)
  sub = lambda *names: {'p': _get(v['params'], names), 's': _get(v['batch_stats'], names)}
  g = _Graph()
  x = g.op('Transpose', ['image'], perm=[0, 3, 1, 2], base='nchw')
  pool = lambda t: g.op('MaxPool', [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
  x = pool(_fb_conv_bn(g, x, sub('conv1'), 4, crelu=True))
  x = pool(_fb_conv_bn(g, x, sub('conv2'), 2, crelu=True))
  for i in (1, 2, 3):
    n = f'inception{i}'
    b1 = _fb_conv_bn(g, x, sub(n, 'branch1x1'), 1)
    pooled = g.op('AveragePool', [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4,
                  count_include_pad=1)
    b2 = _fb_conv_bn(g, pooled, sub(n, 'branch1x1_2'), 1)
    b3 = _fb_conv_bn(g, _fb_conv_bn(g, x, sub(n, 'branch3x3_reduce'), 1),
                     sub(n, 'branch3x3'), 1)
    b4 = _fb_conv_bn(g, x, sub(n, 'branch3x3_reduce_2'), 1)
    b4 = _fb_conv_bn(g, _fb_conv_bn(g, b4, sub(n, 'branch3x3_2'), 1), sub(n, 'branch3x3_3'), 1)
    x = g.op('Concat', [b1, b2, b3, b4], axis=1)
  sources = [x]
  for a, bb in (('conv3_1', 'conv3_2'), ('conv4_1', 'conv4_2')):
    x = _fb_conv_bn(g, _fb_conv_bn(g, x, sub(a), 1), sub(bb), 2)
    sources.append(x)
  locs, logits = [], []
  for k, src in enumerate(sources):
    for name, d, dst in (('loc', 4, locs), ('conf', 2, logits)):
      p = v['params'][f'{name}_{k}']
      w = np.asarray(p['kernel']).transpose(3, 2, 0, 1)
      y = g.op('Conv', [src, g.const(w, 'w'), g.const(p['bias'], 'b')], name,
               kernel_shape=[3, 3], pads=[1] * 4)
      # NHWC flattening: a cell's anchors together, rows then columns (prior order).
      dst.append(g.reshape(g.op('Transpose', [y], perm=[0, 2, 3, 1]), [0, -1, d]))
  g.op('Concat', locs, axis=1, out='loc')
  prob = g.op('Softmax', [g.op('Concat', logits, axis=1)], axis=-1)
  g.reshape(g.slice(prob, [1], [2], [2]), [0, -1])
  g.nodes[-1].output[0] = 'scores'
  f32 = onnx.TensorProto.FLOAT
  graph = helper.make_graph(
      g.nodes, 'faceboxes', [helper.make_tensor_value_info('image', f32, ['b', 'h', 'w', 3])],
      [helper.make_tensor_value_info('loc', f32, ['b', 'p', 4]),
       helper.make_tensor_value_info('scores', f32, ['b', 'p'])], g.inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                            producer_name='dasl_jax.inference.onnx')
  model.ir_version = 8
  onnx.checker.check_model(model)
  return model


def _get(tree, names):
  for n in names:
    tree = tree[n]
  return tree


def _numpy_tree(tree):
  if isinstance(tree, dict) or hasattr(tree, 'items'):
    return {k: _numpy_tree(v) for k, v in tree.items()}
  return np.asarray(tree, np.float32)


def export_onnx(restored, landmark_model, path):
  """Write :func:`build_model` to ``path``; returns the path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(build_model(restored, landmark_model).SerializeToString())
  return path


def _ort():
  try:
    import onnxruntime as ort
  except ImportError:
    raise DaslError('the onnxruntime backend needs the onnxruntime package '
                    '(pip install -r requirements.txt)') from None
  return ort


def session(model_or_path, threads=0):
  """An onnxruntime CPU session of a ``ModelProto`` or a ``.onnx`` file."""
  ort = _ort()
  opts = ort.SessionOptions()
  opts.log_severity_level = 3
  if threads:
    opts.intra_op_num_threads = threads
  if isinstance(model_or_path, (str, Path)):
    if not Path(model_or_path).exists():
      raise DaslError(f'{model_or_path}: ONNX model not found')
    src = str(model_or_path)
  else:
    src = model_or_path.SerializeToString()
  try:
    return ort.InferenceSession(src, opts, providers=['CPUExecutionProvider'])
  except Exception as e:
    raise DaslError(f'{model_or_path if isinstance(model_or_path, (str, Path)) else "model"}: '
                    f'onnxruntime cannot load it ({type(e).__name__}: {e})') from None


def read_regressor(path):
  """A regressor ``.onnx`` written by ``experiments.export --format onnx`` (float or int8).

  Returns:
    (``ModelProto``, info): info holds ``convention``, ``in_channels`` (int),
    ``arch``, ``face_model`` ('bfm' or 'synthetic'), ``quantization`` ('none' or
    'int8'), ``stats`` (``ParamStats`` read from the graph) and ``lm_model`` (the
    68-row ``MorphableModel`` of the graph's landmark stage).
  Raises:
    DaslError: missing file, not ONNX, or an ONNX model of something else (one line
      naming the file and what it holds).
  """
  onnx, _ = _onnx()
  from onnx import numpy_helper
  from dasl_jax.face_model import morphable_model as mm
  path = Path(path)
  if not path.exists():
    raise DaslError(f'--onnx {path}: file not found')
  if path.is_dir():
    raise DaslError(f'--onnx {path}: is a folder, expected a .onnx file')
  try:
    model = onnx.load(str(path))
  except Exception as e:
    raise DaslError(f'--onnx {path}: not an ONNX model ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:120] if str(e) else ""})') from None
  ins = [i.name for i in model.graph.input]
  outs = [o.name for o in model.graph.output]
  meta = {m.key: m.value for m in model.metadata_props}
  inits = {t.name: t for t in model.graph.initializer}
  needed = (LM_U, LM_BASIS, PARAM_MEAN, PARAM_STD)
  if (meta.get(KIND_KEY) != KIND or ins[:1] != ['crops'] or not set(OUTPUTS) <= set(outs)
      or any(n not in inits for n in needed)):
    what = f'inputs {ins}, outputs {outs}'
    if ins == ['image'] and set(outs) == {'loc', 'scores'}:
      what = 'a FaceBoxes detector'
    raise DaslError(f'--onnx {path}: not a face regressor written by experiments.export '
                    f'--format onnx ({what}; expected input crops, outputs '
                    f'{", ".join(OUTPUTS)})')
  try:
    in_channels = int(meta.get('in_channels', '3'))
    convention = meta['convention']
    camera._check_convention(convention)
  except (KeyError, ValueError, DaslError) as e:
    raise DaslError(f'--onnx {path}: unreadable metadata ({e})') from None
  arr = {n: numpy_helper.to_array(inits[n]).astype(np.float32) for n in needed}
  basis = arr[LM_BASIS]  # (50, 204): shape then expression rows
  n_shp = P.SHAPE.stop - P.SHAPE.start
  import jax.numpy as jnp  # leaves as jax arrays, as every loader makes them (jit-safe)
  lm = mm.MorphableModel(u=jnp.asarray(arr[LM_U].reshape(-1)),
                         w_shp=jnp.asarray(basis[:n_shp].T), w_exp=jnp.asarray(basis[n_shp:].T),
                         keypoints=jnp.arange(arr[LM_U].size // 3, dtype=jnp.int32),
                         name=f'{path}[68 landmarks]')
  stats = P.ParamStats(arr[PARAM_MEAN], arr[PARAM_STD],
                       meta.get('param_stats_source', str(path)))
  info = {'convention': convention, 'in_channels': in_channels,
          'arch': meta.get('arch', '?'), 'face_model': meta.get('face_model', 'bfm'),
          'quantization': meta.get('quantization', 'none'), 'stats': stats, 'lm_model': lm}
  return model, info


class OnnxPredictor:
  """``inference.Predictor`` on onnxruntime: same ``predict_crops`` / ``predict_many``
  arguments and outputs.

  Args:
    restored: ``checkpoint.restore`` output (the graph is built from its variables);
      :meth:`from_file` reads an exported ``.onnx`` instead.
    landmark_model: morphable model for the landmarks.
    batch_size: the largest batch one call runs (bigger inputs are split).
    bootstrap_iters: passes of the self-bootstrapped FLM (4-channel models
      without detector landmarks), run on the host around the graph.
    threads: onnxruntime intra-op threads (0: its default, one per core).
  """
  backend = 'onnxruntime'

  def __init__(self, restored, landmark_model, batch_size=32, bootstrap_iters=2, threads=0):
    model = build_model(restored, landmark_model)
    self._setup(model, restored.model_config.in_channels, restored.model_config.convention,
                restored.param_stats, landmark_model.landmark_model(), batch_size,
                bootstrap_iters, threads)
    self.config = restored.model_config
    self.source = 'graph built from the checkpoint'
    self.quantization = 'none'

  @classmethod
  def from_file(cls, path, batch_size=32, bootstrap_iters=2, threads=0):
    """A predictor of an exported ``.onnx`` file (:func:`read_regressor`)."""
    model, info = read_regressor(path)
    self = cls.__new__(cls)
    self._setup(model, info['in_channels'], info['convention'], info['stats'],
                info['lm_model'], batch_size, bootstrap_iters, threads, source=path)
    self.config = None
    self.source = str(path)
    self.quantization = info['quantization']
    self.face_model = info['face_model']
    return self

  def _setup(self, model, in_channels, convention, stats, lm_model, batch_size,
             bootstrap_iters, threads, source=None):
    from dasl_jax.face_model import morphable_model as mm
    if bootstrap_iters < 1:
      raise DaslError(f'--bootstrap_iters must be >= 1, got {bootstrap_iters}')
    self._in_channels = int(in_channels)
    self.convention = convention
    self.stats = stats
    self.batch_size = batch_size
    self.bootstrap_iters = bootstrap_iters
    self.lm_model = lm_model
    self.model = model
    self.session = session(source if source is not None else model, threads)
    self.mean_lms68 = np.asarray(mm.landmarks2d(
        self.lm_model, np.asarray(self.stats.mean, np.float32), self.convention))

  @property
  def in_channels(self):
    return self._in_channels

  def describe(self):
    """One phrase for the console and the JSON: runtime, version, model."""
    import onnxruntime
    q = '' if self.quantization == 'none' else f', {self.quantization}'
    return f'onnxruntime {onnxruntime.__version__} ({self.source}{q})'

  def _run(self, crops, points18):
    feed = {'crops': crops}
    if self.in_channels == 4:
      feed['points18'] = points18
    return self.session.run(list(OUTPUTS), feed)

  def predict_crops(self, crops, lms68=None, iters=None, points18=None, mask18=None):
    """As ``inference.Predictor.predict_crops``: dict of ``whitened`` (F, 62),
    ``params`` (F, 62), ``lms68`` (F, 68, 2) numpy arrays and ``pose`` (F, 3) yaw,
    pitch, roll degrees (``camera.pose_angles`` of the parameters, on the host)."""
    crops = np.asarray(crops)
    if (crops.ndim != 4 or crops.shape[1:] != (camera.CROP_SIZE, camera.CROP_SIZE, 3)):
      raise DaslError(f'crops: expected (F, 120, 120, 3) uint8, got {crops.shape}')
    crops = np.ascontiguousarray(crops, np.uint8)
    n = len(crops)
    out = {'whitened': np.zeros((n, 62), np.float32), 'params': np.zeros((n, 62), np.float32),
           'lms68': np.zeros((n, 68, 2), np.float32), 'pose': np.zeros((n, 3), np.float32)}
    if n == 0:
      return out
    if points18 is not None:
      pts = np.array(points18, np.float32)
      if mask18 is not None:  # not drawn = non-finite (landmarks.flm skips both)
        pts[np.asarray(mask18) <= 0] = np.nan
      passes = 1
    elif lms68 is not None:
      pts = L.select18_np(np.asarray(lms68, np.float32)).astype(np.float32)
      passes = 1
    else:
      pts = np.broadcast_to(L.select18_np(self.mean_lms68), (n, 18, 2)).astype(np.float32)
      passes = self.bootstrap_iters if iters is None else iters
    if passes < 1:
      raise DaslError(f'--bootstrap_iters must be >= 1, got {passes}')
    if self.in_channels == 3:
      passes = 1
    for s in range(0, n, self.batch_size):
      c = crops[s:s + self.batch_size]
      q = pts[s:s + self.batch_size]
      for _ in range(passes):
        res = self._run(c, q)
        q = L.select18_np(res[2]).astype(np.float32)
      for name, r in zip(OUTPUTS, res):
        out[name][s:s + len(c)] = r
    fR = out['params'][:, :12].reshape(n, 3, 4)[:, :, :3]
    out['pose'] = np.asarray(camera.pose_angles(fR), np.float32)
    return out

  def predict_many(self, crops, n, points18=None, iters=None, batch_size=None,
                   progress=True, desc='predict'):
    """As ``inference.Predictor.predict_many``: many crops read batch by batch.

    Args:
      crops: index array (b,) -> (b, 120, 120, 3) uint8, or an (n, ...) array.
      points18: optional (n, 18, 2) FLM points (4-channel models: one pass).
    Returns:
      dict as :meth:`predict_crops`.
    """
    from tqdm import tqdm
    get = crops if callable(crops) else (lambda ii, a=np.asarray(crops): a[ii])
    bs = batch_size or self.batch_size
    parts = []
    with tqdm(total=n, desc=desc, unit='img', disable=not progress) as bar:
      for s in range(0, n, bs):
        ii = np.arange(s, min(s + bs, n))
        pts = None if points18 is None else np.asarray(points18, np.float32)[ii]
        parts.append(self.predict_crops(np.asarray(get(ii), np.uint8), points18=pts,
                                        iters=iters))
        bar.update(len(ii))
    if not parts:
      return self.predict_crops(np.zeros((0, 120, 120, 3), np.uint8))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
