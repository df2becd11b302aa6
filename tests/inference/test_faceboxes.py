"""FaceBoxes: anchors, decoding, NMS, weight checks, and the boxes of the
original PyTorch code (``pretrained/faceboxes_reference.json``)."""
import itertools
import json
import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.inference import detect as D
from dasl_jax.inference import faceboxes as F
from dasl_jax.errors import DaslError
from tests.helpers.asset_marks import asset_path, requires_assets

WEIGHTS = ('pretrained', 'FaceBoxesProd.pth')
REFERENCE = ('pretrained', 'faceboxes_reference.json')
DEMOS = {'images/emma.jpg': 3, 'images/trump_hillary.jpg': 2, 'images/JianzhuGuo.jpg': 1}


def _priors_by_loops(height, width):
  # Re-derived from the paper's description, cell by cell with plain loops:
  # sources of stride 32/64/128 with ceil-sized maps; anchor sizes 32 (4x4
  # centres at 0, 1/4, 1/2, 3/4 of a cell), 64 (2x2 at 0, 1/2), else one at 1/2.
  out = []
  for step, sizes in zip((32, 64, 128), ((32, 64, 128), (256,), (512,))):
    for i in range(math.ceil(height / step)):
      for j in range(math.ceil(width / step)):
        for s in sizes:
          offs = {32: [0, .25, .5, .75], 64: [0, .5]}.get(s, [.5])
          for oy, ox in itertools.product(offs, offs):
            out.append([(j + ox) * step / width, (i + oy) * step / height,
                        s / width, s / height])
  return np.asarray(out, np.float32)


@pytest.mark.parametrize('size', [(100, 170), (450, 450), (257, 129)])
def test_prior_boxes_match_a_loop_rederivation(size):
  got = F.prior_boxes(*size)
  want = _priors_by_loops(*size)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_network_outputs_one_row_per_prior():
  # Odd sizes: the padded convs and pools must give ceil(size / stride) cells.
  net = F.FaceBoxesNet()
  for h, w in [(65, 97), (128, 200)]:
    x = jnp.zeros((1, h, w, 3))
    loc, scores = jax.eval_shape(lambda x: net.init_with_output(
        jax.random.PRNGKey(0), x)[0], x)
    p = len(F.prior_boxes(h, w))
    assert loc.shape == (1, p, 4) and scores.shape == (1, p)


def test_decode_by_hand():
  priors = np.array([[0.5, 0.5, 0.2, 0.2], [0.3, 0.6, 0.1, 0.4]], np.float32)
  loc = np.array([[0, 0, 0, 0], [1, -2, math.log(2) / 0.2, -math.log(2) / 0.2]], np.float32)
  got = F.decode(loc, priors)
  # Prior 2: centre (0.3 + 0.1*0.1, 0.6 - 2*0.1*0.4) = (0.31, 0.52); size (0.2, 0.2).
  want = [[0.4, 0.4, 0.6, 0.6], [0.21, 0.42, 0.41, 0.62]]
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(F.decode(jnp.asarray(loc), jnp.asarray(priors)), want, atol=1e-6)


def test_resize_factor_follows_the_reference_rule():
  assert F.resize_factor(450, 450) == 1.0
  assert F.resize_factor(720, 1080) == 1.0
  assert F.resize_factor(1440, 1000) == 0.5
  f = F.resize_factor(1901, 3913)  # emma.jpg: the width limit binds
  assert (int(f * 3913), int(f * 1901)) == (1080, 524)


def test_fast_rcnn_nms_counts_pixels_inclusively():
  # Widths 10 -> 11 pixels inclusive; intersection 5 -> 6 columns.
  boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
  scores = np.array([0.9, 0.8])
  iou_plain = 50 / 150
  iou_fast = 66 / (121 + 121 - 66)
  assert iou_plain < 0.36 < iou_fast
  assert D.nms(boxes, scores, 0.36).tolist() == [0, 1]
  assert D.nms(boxes, scores, 0.36, variant='fast_rcnn').tolist() == [0]
  # Suppression at exactly the threshold (>=), which the plain variant keeps.
  same = np.array([[0, 0, 9, 9], [0, 0, 9, 9]], np.float32)
  assert D.nms(same, scores, 1.0, variant='fast_rcnn').tolist() == [0]
  assert D.nms(same, scores, 1.0).tolist() == [0, 1]


def test_compare_boxes():
  want = np.array([[0, 0, 10, 10, 0.9], [50, 50, 80, 80, 0.8]])
  got = np.array([[50.5, 48.7, 80, 80, 0.805], [0, 0, 10.5, 10, 0.9], [200, 200, 220, 220, .7]])
  r = F.compare_boxes(got, want)
  assert (r['matched'], r['missing'], r['extra']) == (1, 1, 1)
  assert r['max_corner'] == pytest.approx(1.3) and r['max_score'] == pytest.approx(0.005)


def _fake_state_dict():
  """Zeros of every shape the network needs, in PyTorch layout."""
  state = {}
  for col, shapes in F.variable_shapes().items():
    for path, shape in shapes.items():
      s = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
      state[F._torch_name(path)] = np.zeros(s, np.float32)
  return state


def test_state_dict_checks_keys_and_shapes():
  state = {'module.' + k: v for k, v in _fake_state_dict().items()}
  v = F.variables_from_state_dict(state, 'x.pth')  # the DataParallel prefix is dropped
  assert v['params']['loc_0']['kernel'].shape == (3, 3, 128, 84)
  assert v['batch_stats']['conv1']['bn']['var'].shape == (24,)
  bad = dict(state)
  del bad['module.conf.2.bias']
  bad['module.conv1.conv.weight'] = np.zeros((32, 3, 7, 7), np.float32)
  with pytest.raises(DaslError) as e:
    F.variables_from_state_dict(bad, 'other.pth')
  msg = str(e.value)
  assert msg.startswith('other.pth: not a FaceBoxes state dict') and '\n' not in msg
  assert 'conf.2.bias' in msg and 'conv1.conv.weight (32, 3, 7, 7)' in msg


@requires_assets('pretrained', 'mb05_120x120.pth')
def test_another_networks_file_is_one_line_error(assets):
  path = assets / 'pretrained' / 'mb05_120x120.pth'
  with pytest.raises(DaslError, match=r'mb05_120x120\.pth: not a FaceBoxes state dict: '
                                       r'\d+ missing keys'):
    F.FaceBoxesDetector(path)


def test_missing_weights_say_where_to_put_them(tmp_path):
  with pytest.raises(DaslError, match='FaceBoxes weights not found.*--detector haar'):
    F.FaceBoxesDetector(tmp_path / 'none.pth')


# ----------------------------------------------------------------------------
# Against the original PyTorch code's boxes.


@pytest.fixture(scope='module')
def detector_and_reference():
  # The tests using this fixture carry @needs_weights_and_reference: they skip, with the
  # missing path as the reason, when either file is absent.
  ref = json.loads(asset_path(*REFERENCE).read_text())['boxes']
  return F.FaceBoxesDetector(asset_path(*WEIGHTS)), ref


def needs_weights_and_reference(test):
  return requires_assets(*WEIGHTS)(requires_assets(*REFERENCE)(test))


def _check(det, ref, names):
  for name in names:
    img = cv2.imread(str(asset_path(*name.split('/'))))
    assert img is not None, name
    got, want = det.detect(img), np.asarray(ref[name]).reshape(-1, 5)
    r = F.compare_boxes(got, want, px=1.0, score=0.01)
    assert r['matched'] == len(want) and r['extra'] == 0, (name, r, got, want)


@requires_assets('images', 'emma.jpg')
@needs_weights_and_reference
def test_demo_photos_match_reference(detector_and_reference):
  det, ref = detector_and_reference
  assert {k: len(ref[k]) for k in DEMOS} == DEMOS
  _check(det, ref, DEMOS)


@requires_assets('aflw2000-3d', 'AFLW2000', 'image00002.jpg')
@needs_weights_and_reference
def test_aflw2000_subset_matches_reference(detector_and_reference):
  det, ref = detector_and_reference
  names = sorted(k for k in ref if k.startswith('aflw2000-3d/AFLW2000/'))
  assert len(names) == 2000
  sub = names[::20]  # 100 images over the whole list (all 450x450: one compilation)
  assert any(len(ref[n]) == 0 for n in sub) and any(len(ref[n]) > 1 for n in sub)
  _check(det, ref, sub)


def test_make_detector_rejects_unknown_names():
  from dasl_jax import inference
  with pytest.raises(DaslError, match="--detector must be one of faceboxes, haar, got 'yolo'"):
    inference.make_detector('yolo')


@requires_assets('images', 'trump_hillary.jpg')
@needs_weights_and_reference
def test_runner_uses_faceboxes_by_default(detector_and_reference, tmp_path):
  # The prediction command's path: no --boxes, default detector -> the
  # reference's two faces are the records' boxes.
  from dasl_jax import inference
  from tests.helpers.random_models import make_checkpoint
  _, ref = detector_and_reference
  runner = inference.Runner(make_checkpoint(tmp_path / 'ckpt'), tmp_path / 'out',
                            meshes=False, overlay=False)
  assert isinstance(runner.detector, F.FaceBoxesDetector)
  name = 'images/trump_hillary.jpg'
  rec = runner.image(asset_path(*name.split('/')),
                     inference.load_image(asset_path(*name.split('/'))))
  got = [f['box'] + [f['score']] for f in rec['faces']]
  assert [f['detector'] for f in rec['faces']] == ['faceboxes'] * 2
  r = F.compare_boxes(got, ref[name], px=1.0, score=0.01)
  assert r['matched'] == 2 and r['extra'] == 0, (got, ref[name])
