"""FaceBoxes face detector (Zhang et al., IJCB 2017) as 3DDFA_V2 runs it.

Pieces, each usable alone:

* :class:`FaceBoxesNet`: the network (Flax, NHWC, inference only): two CReLU
  convs with max pooling, three inception blocks, two conv pairs; 3x3 heads on
  the three detection sources (strides 32, 64, 128) give, per anchor, 4 box
  offsets and 2 class logits.
* :func:`load_variables`: ``FaceBoxesProd.pth`` (a PyTorch state dict, read
  with :mod:`dasl_jax.io.torch_pickle`) -> Flax variables, checked key by key.
* :func:`prior_boxes`, :func:`decode`: the anchors and the offset decoding.
* :class:`FaceBoxesDetector`: image in, ``(N, 5)`` boxes out, with 3DDFA_V2's
  settings (:data:`SETTINGS`).

Facts kept from the reference (3DDFA_V2's ``FaceBoxes/``): PyTorch pads every
conv and pool symmetrically by ``k // 2`` (written here explicitly, never
'SAME', which pads asymmetrically for strides > 1 and would shift the
sampling grid); the inception's average pool counts the zero padding (divides
by 9 at the border too); CReLU is ``relu(concat(x, -x))`` after BN; anchors of
size 32 and 64 are densified to 4x4 and 2x2 centres per cell; boxes are
scaled back to the original image by dividing by the resize factor; NMS is
Fast R-CNN's (``+1`` pixel widths, suppress at IoU >= threshold).

The jitted forward compiles once per input size (about a second on a small
CPU; the frames of a video share one). Sizes are deliberately not padded to
buckets: after the first layer the padded area no longer holds zeros, so the
responses along the bottom and right edges would change and boxes there would
no longer be the reference's.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dasl_jax.inference import detect
from dasl_jax.errors import DaslError

WEIGHTS_FILE = 'FaceBoxesProd.pth'  # under $DASL_ASSETS/pretrained/
BN_EPS = 1e-5
MEAN_BGR = (104.0, 117.0, 123.0)
# Anchor minimum sizes per detection source and the sources' strides.
MIN_SIZES: Tuple[Tuple[int, ...], ...] = ((32, 64, 128), (256,), (512,))
STEPS: Tuple[int, ...] = (32, 64, 128)
# Anchors of these sizes get n x n centres per cell (offsets 0, 1/n, ...) so
# small faces are sampled as densely as large ones; others one centre at +0.5.
DENSITY = {32: 4, 64: 2}
VARIANCES = (0.1, 0.2)


@dataclasses.dataclass(frozen=True)
class Settings:
  """3DDFA_V2's detection settings (``FaceBoxes/FaceBoxes.py``)."""
  max_height: int = 720      # images are scaled down to fit 720 x 1080
  max_width: int = 1080
  confidence: float = 0.05   # candidates above this score ...
  top_k: int = 5000          # ... the best 5000 of them go to NMS
  nms_iou: float = 0.3
  keep_top_k: int = 750      # at most 750 survive NMS
  min_score: float = 0.5     # faces reported: score strictly above this


SETTINGS = Settings()


def anchors_per_cell(min_sizes: Sequence[int]) -> int:
  """Anchors one feature-map cell carries: sum of density**2 over its sizes."""
  return sum(DENSITY.get(s, 1) ** 2 for s in min_sizes)


# ----------------------------------------------------------------------------
# The network.


def _pad(k):
  p = k // 2
  return ((p, p), (p, p))


class ConvBN(nn.Module):
  """Conv (no bias) + batch norm (running statistics) + ReLU or CReLU.

  x (B, H, W, Cin) -> (B, H', W', features), or 2 * features with ``crelu``.
  """
  features: int
  kernel: int
  stride: int = 1
  crelu: bool = False

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                padding=_pad(self.kernel), use_bias=False, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name='bn')(x)
    if self.crelu:  # both signs of the response: half the filters for the same outputs
      x = jnp.concatenate([x, -x], axis=-1)
    return nn.relu(x)


class Inception(nn.Module):
  """FaceBoxes' inception block: 128 -> 4 x 32 channels, same size.

  Branches (concatenated in this order): 1x1; 3x3 average pool then 1x1;
  1x1 reduce then 3x3; 1x1 reduce then two 3x3.
  """

  @nn.compact
  def __call__(self, x):
    b1 = ConvBN(32, 1, name='branch1x1')(x)
    # count_include_pad: the border divides by 9 like the interior (PyTorch's default).
    pooled = nn.avg_pool(x, (3, 3), (1, 1), padding=_pad(3), count_include_pad=True)
    b2 = ConvBN(32, 1, name='branch1x1_2')(pooled)
    b3 = ConvBN(32, 3, name='branch3x3')(ConvBN(24, 1, name='branch3x3_reduce')(x))
    b4 = ConvBN(24, 1, name='branch3x3_reduce_2')(x)
    b4 = ConvBN(32, 3, name='branch3x3_3')(ConvBN(32, 3, name='branch3x3_2')(b4))
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


def _max_pool(x):
  """3x3 stride-2 max pool, padding 1 (padded cells never win: -inf)."""
  return nn.max_pool(x, (3, 3), (2, 2), padding=_pad(3))


class FaceBoxesNet(nn.Module):
  """FaceBoxes.

  Call with x (B, H, W, 3) float32, BGR minus :data:`MEAN_BGR` ->
  ``loc`` (B, P, 4) box offsets and ``scores`` (B, P) face probabilities, P the
  number of :func:`prior_boxes` for (H, W), in their order.
  Module names follow the PyTorch state dict (``loc.0`` is ``loc_0``).
  """

  @nn.compact
  def __call__(self, x):
    x = ConvBN(24, 7, stride=4, crelu=True, name='conv1')(x)
    x = _max_pool(x)
    x = ConvBN(64, 5, stride=2, crelu=True, name='conv2')(x)
    x = _max_pool(x)
    for i in (1, 2, 3):
      x = Inception(name=f'inception{i}')(x)
    sources = [x]
    x = ConvBN(256, 3, stride=2, name='conv3_2')(ConvBN(128, 1, name='conv3_1')(x))
    sources.append(x)
    x = ConvBN(256, 3, stride=2, name='conv4_2')(ConvBN(128, 1, name='conv4_1')(x))
    sources.append(x)
    locs, logits = [], []
    for k, (src, sizes) in enumerate(zip(sources, MIN_SIZES)):
      a = anchors_per_cell(sizes)
      b = src.shape[0]
      # NHWC flattening puts a cell's anchors together, rows then columns: the
      # order of prior_boxes.
      locs.append(nn.Conv(4 * a, (3, 3), padding=_pad(3), name=f'loc_{k}')(src)
                  .reshape(b, -1, 4))
      logits.append(nn.Conv(2 * a, (3, 3), padding=_pad(3), name=f'conf_{k}')(src)
                    .reshape(b, -1, 2))
    loc = jnp.concatenate(locs, axis=1)
    scores = jax.nn.softmax(jnp.concatenate(logits, axis=1), axis=-1)[..., 1]
    return loc, scores


# ----------------------------------------------------------------------------
# Anchors and decoding (pure numpy).


def feature_map_sizes(height: int, width: int) -> List[Tuple[int, int]]:
  """(rows, cols) of each detection source: ceil(size / stride), which is what
  the padded convs and pools produce."""
  return [(-(-height // s), -(-width // s)) for s in STEPS]


def prior_boxes(height: int, width: int) -> np.ndarray:
  """Anchors for an input of (height, width).

  Returns:
    (P, 4) float32 ``cx, cy, w, h`` as fractions of the image width/height;
    per source, cells row by row, per cell its sizes in :data:`MIN_SIZES`
    order, per size its n x n centres (y outer, x inner), n = :data:`DENSITY`.
  """
  out = []
  for (rows, cols), step, sizes in zip(feature_map_sizes(height, width), STEPS, MIN_SIZES):
    cell = []  # (A, 3): centre offset within the cell (x, y, in cells) and size (px)
    for s in sizes:
      n = DENSITY.get(s, 1)
      offs = np.arange(n) / n if n > 1 else np.array([0.5])
      oy, ox = np.meshgrid(offs, offs, indexing='ij')
      cell.append(np.stack([ox.ravel(), oy.ravel(), np.full(n * n, float(s))], -1))
    cell = np.concatenate(cell)
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing='ij')
    cx = (j[..., None] + cell[:, 0]) * step / width
    cy = (i[..., None] + cell[:, 1]) * step / height
    w = np.broadcast_to(cell[:, 2] / width, cx.shape)
    h = np.broadcast_to(cell[:, 2] / height, cx.shape)
    out.append(np.stack([cx, cy, w, h], -1).reshape(-1, 4))
  return np.concatenate(out).astype(np.float32)


def decode(loc, priors, variances=VARIANCES):
  """Box offsets -> corner boxes (SSD encoding).

  Args:
    loc: (P, 4) ``dx, dy, dw, dh`` network outputs; priors: (P, 4) ``cx, cy, w, h``.
  Returns:
    (P, 4) ``x1, y1, x2, y2`` in the priors' units (works with numpy or jax arrays).
  """
  xp = jnp if isinstance(loc, jax.Array) else np
  centre = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
  size = priors[:, 2:] * xp.exp(loc[:, 2:] * variances[1])
  lo = centre - size / 2
  return xp.concatenate([lo, lo + size], axis=1)


def resize_factor(height: int, width: int, settings: Settings = SETTINGS) -> float:
  """3DDFA_V2's scale: shrink to at most max_height, then further to max_width
  (never enlarge). Kept in its order of operations so the resized size, ``int(f
  * side)``, is the same to the pixel."""
  f = 1.0
  if height > settings.max_height:
    f = settings.max_height / height
  if width * f > settings.max_width:
    f *= settings.max_width / (width * f)
  return f


def select(boxes, scores, settings: Settings = SETTINGS) -> np.ndarray:
  """Threshold, top-k, NMS and the final score filter of 3DDFA_V2.

  Args:
    boxes: (P, 4) image pixels; scores: (P,).
  Returns:
    (N, 5) float32 ``x1, y1, x2, y2, score``, best first.
  """
  boxes = np.asarray(boxes, np.float32)
  scores = np.asarray(scores, np.float32)
  idx = np.where(scores > settings.confidence)[0]
  # Same sort call as the reference (descending by reversing an ascending
  # argsort), so exact score ties break the same way.
  order = idx[np.argsort(scores[idx])[::-1][:settings.top_k]]
  dets = np.concatenate([boxes[order], scores[order, None]], 1)
  keep = detect.nms(dets[:, :4], dets[:, 4], settings.nms_iou, variant='fast_rcnn')
  dets = dets[keep][:settings.keep_top_k]
  return dets[dets[:, 4] > settings.min_score]


# ----------------------------------------------------------------------------
# Weights.


def _torch_name(path: Tuple[str, ...]) -> str:
  """Flax variable path -> PyTorch state-dict key."""
  *mods, leaf = path
  mods = [re.sub(r'^(loc|conf)_(\d+)$', r'\1.\2', m) for m in mods]
  leaf = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
          'mean': 'running_mean', 'var': 'running_var'}[leaf]
  return '.'.join(mods + [leaf])


def variable_shapes() -> Dict[str, Dict[Tuple[str, ...], Tuple[int, ...]]]:
  """{'params' | 'batch_stats': {flax path: shape}} of :class:`FaceBoxesNet`."""
  tree = jax.eval_shape(FaceBoxesNet().init, jax.random.PRNGKey(0),
                        jnp.zeros((1, 128, 128, 3), jnp.float32))
  return {col: {tuple(k.key for k in p): tuple(v.shape)
                for p, v in jax.tree_util.tree_flatten_with_path(tree[col])[0]}
          for col in ('params', 'batch_stats')}


def _unflatten(flat):
  out = {}
  for path, v in flat.items():
    d = out
    for k in path[:-1]:
      d = d.setdefault(k, {})
    d[path[-1]] = v
  return out


def variables_from_state_dict(state: Dict[str, np.ndarray], source='state dict'):
  """A FaceBoxes PyTorch state dict -> Flax variables of :class:`FaceBoxesNet`.

  Conv weights (O, I, kh, kw) become (kh, kw, I, O). A ``module.`` prefix
  (DataParallel) is dropped. Unused keys (``num_batches_tracked``) are ignored.

  Raises:
    DaslError naming ``source`` when keys are missing or have other shapes
    (a checkpoint of another network).
  """
  state = {(k[len('module.'):] if k.startswith('module.') else k): v
           for k, v in state.items()}
  out, missing, wrong = {}, [], []
  for col, shapes in variable_shapes().items():
    flat = {}
    for path, shape in shapes.items():
      name = _torch_name(path)
      if name not in state:
        missing.append(name)
        continue
      v = np.asarray(state[name])
      if v.ndim == 4:
        v = v.transpose(2, 3, 1, 0)
      if v.shape != shape:
        want = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
        wrong.append(f'{name} {tuple(state[name].shape)} (expected {want})')
        continue
      flat[path] = v.astype(np.float32)
    out[col] = _unflatten(flat)
  if missing or wrong:
    parts = []
    if missing:
      parts.append(f'{len(missing)} missing keys ({", ".join(missing[:3])}'
                   f'{", ..." if len(missing) > 3 else ""})')
    if wrong:
      parts.append(f'{len(wrong)} of other shapes ({", ".join(wrong[:2])}'
                   f'{", ..." if len(wrong) > 2 else ""})')
    raise DaslError(f'{source}: not a FaceBoxes state dict: {"; ".join(parts)}')
  return out


def load_variables(path):
  """``FaceBoxesProd.pth`` -> Flax variables (see :func:`variables_from_state_dict`)."""
  from dasl_jax.io import torch_pickle
  return variables_from_state_dict(torch_pickle.load_state_dict(path), str(path))


def default_weights() -> Path:
  from dasl_jax.assets import asset
  return asset('pretrained', WEIGHTS_FILE)


# ----------------------------------------------------------------------------
# The detector.


@jax.jit
def _forward(variables, image):
  """(H, W, 3) float32 mean-subtracted BGR -> boxes (P, 4) as image fractions
  and scores (P,). One compilation per image size (video frames share one)."""
  h, w = image.shape[:2]
  loc, scores = FaceBoxesNet().apply(variables, image[None])
  priors = jnp.asarray(prior_boxes(h, w))  # a constant: shapes are static here
  return decode(loc[0], priors), scores[0]


BACKENDS = ('jax', 'onnxruntime')


class FaceBoxesDetector:
  """FaceBoxes with 3DDFA_V2's settings.

  Args:
    weights: path of ``FaceBoxesProd.pth`` (default: ``$DASL_ASSETS/pretrained/``).
    settings: :class:`Settings` (default: 3DDFA_V2's).
    backend: 'jax' (the Flax network, jitted once per image size) or
      'onnxruntime' (the same network as an ONNX graph with symbolic height and
      width, ``onnx.build_faceboxes``); priors, decoding and NMS run in numpy
      either way.
    threads: onnxruntime intra-op threads (0: its default).
  """

  def __init__(self, weights=None, settings: Settings = SETTINGS, backend='jax', threads=0):
    if backend not in BACKENDS:
      raise DaslError(f'--backend must be one of {", ".join(BACKENDS)}, got {backend!r}')
    path = Path(weights) if weights else default_weights()
    if not path.exists():
      raise DaslError(f'{path}: FaceBoxes weights not found (put {WEIGHTS_FILE} at '
                      f'{default_weights()} or pass --faceboxes_weights FILE, or use '
                      '--detector haar)')
    self.weights = path
    self.settings = settings
    self.backend = backend
    variables = load_variables(path)
    self._priors = {}
    if backend == 'onnxruntime':
      from dasl_jax.inference import onnx as onnx_graphs
      self.session = onnx_graphs.session(onnx_graphs.build_faceboxes(variables), threads)
    else:
      self.variables = jax.device_put(variables)

  def _boxes_scores(self, x):
    """(h, w, 3) network input -> boxes (P, 4) as image fractions, scores (P,)."""
    if self.backend == 'jax':
      return jax.device_get(_forward(self.variables, x))
    h, w = x.shape[:2]
    loc, scores = self.session.run(['loc', 'scores'], {'image': x[None]})
    if (h, w) not in self._priors:
      self._priors = {(h, w): prior_boxes(h, w)}  # video frames share one size
    return decode(loc[0], self._priors[(h, w)]), scores[0]

  def prepare(self, image):
    """(H, W, 3) uint8 BGR -> ((h, w, 3) float32 network input, resize factor)."""
    image = np.asarray(image)
    if image.ndim == 2:
      image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
      raise DaslError(f'FaceBoxes: expected an (H, W, 3) BGR image, got shape {image.shape}')
    h, w = image.shape[:2]
    f = resize_factor(h, w, self.settings)
    if f != 1.0:
      # cv2.resize's default (bilinear) with the reference's int() sizes.
      image = cv2.resize(image, (int(f * w), int(f * h)))
    return image.astype(np.float32) - np.float32(MEAN_BGR), f

  def detect(self, image) -> np.ndarray:
    """Faces in one image.

    Args:
      image: (H, W, 3) uint8 BGR (or (H, W) grey).
    Returns:
      (N, 5) float32 ``x1, y1, x2, y2, score`` in image pixels, best first.
    """
    x, f = self.prepare(image)
    h, w = x.shape[:2]
    boxes, scores = self._boxes_scores(x)
    # Fractions -> resized pixels -> original pixels (float32, as the reference).
    boxes = boxes * np.array([w, h, w, h], np.float32) / np.float32(f)
    return select(boxes, scores, self.settings)

  def detections(self, image) -> List[detect.Detection]:
    """:meth:`detect` as :class:`detect.Detection` records (kind 'faceboxes')."""
    return [detect.Detection(box=b.astype(np.float64), kind='faceboxes')
            for b in self.detect(image)]


def _iou(a, b):
  """IoU of one box a (4,) with boxes b (N, 4)."""
  w = np.maximum(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0)
  h = np.maximum(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0)
  inter = w * h
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def compare_boxes(got, want, px=1.0, score=0.01) -> Dict[str, float]:
  """Compare detections with reference boxes (a port's check).

  Each reference box is paired with the unused detection whose corners are
  nearest (largest corner difference smallest) if that detection overlaps it
  (IoU >= 0.5); a pair matches when every corner is within ``px`` and the
  scores within ``score``.

  Args:
    got, want: (N, 5) and (M, 5) ``x1, y1, x2, y2, score``.
  Returns:
    dict ``matched`` (reference boxes matched), ``missing`` (M - matched),
    ``extra`` (detections paired with no reference box), ``max_corner`` and
    ``max_score`` (largest differences over the pairs; 0 without pairs).
  """
  got = np.asarray(got, np.float64).reshape(-1, 5)
  want = np.asarray(want, np.float64).reshape(-1, 5)
  free = list(range(len(got)))
  matched, max_corner, max_score = 0, 0.0, 0.0
  for w in want:
    if not free:
      break
    err = np.abs(got[free, :4] - w[:4]).max(axis=1)
    k = int(np.argmin(err))
    if _iou(w[:4], got[free[k:k + 1], :4])[0] < 0.5:
      continue
    j = free.pop(k)
    ds = abs(got[j, 4] - w[4])
    max_corner, max_score = max(max_corner, float(err[k])), max(max_score, float(ds))
    matched += int(err[k] <= px and ds <= score)
  return dict(matched=matched, missing=len(want) - matched, extra=len(free),
              max_corner=max_corner, max_score=max_score)
