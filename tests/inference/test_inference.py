"""Inference: image reading, the FLM bootstrap, the released model's numbers, the command."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest

from dasl_jax import inference
from dasl_jax.io import checkpoint
from dasl_jax.errors import DaslError
from tests.helpers.asset_marks import asset_path, requires_assets
from tests.helpers.random_models import make_checkpoint

ROOT = Path(__file__).resolve().parents[2]

# 2DASL's 18 points (METHOD.md section 3), re-typed here: pairs are means.
SEL18 = [17, 19, 21, 22, 24, 26, 36, (37, 40), 39, 42, (43, 46), 45, 31, 30, 35,
         48, (62, 66), 54]


# ----------------------------------------------------------------------------
# Images.


def test_load_image_grey_rgba_16bit(tmp_path):
  grey = (np.arange(30 * 20) % 256).astype(np.uint8).reshape(30, 20)
  cv2.imwrite(str(tmp_path / 'g.png'), grey)
  img = inference.load_image(tmp_path / 'g.png')
  assert img.shape == (30, 20, 3) and img.dtype == np.uint8
  assert all(np.array_equal(img[..., k], grey) for k in range(3))
  rgba = np.zeros((10, 12, 4), np.uint8)
  rgba[..., 0] = 200  # blue
  rgba[:, :6, 3] = 255  # left half opaque, right half transparent
  cv2.imwrite(str(tmp_path / 'a.png'), rgba)
  img = inference.load_image(tmp_path / 'a.png')
  np.testing.assert_array_equal(img[:, :6], np.broadcast_to([200, 0, 0], (10, 6, 3)))
  np.testing.assert_array_equal(img[:, 6:], 255)  # composited over white
  deep = np.full((8, 8, 3), 65535, np.uint16)
  cv2.imwrite(str(tmp_path / 'd.png'), deep)
  assert inference.load_image(tmp_path / 'd.png').max() == 255


def test_load_image_applies_exif_orientation(tmp_path):
  from PIL import Image
  a = np.zeros((40, 64, 3), np.uint8)
  a[:, :32] = (255, 0, 0)
  a[:20, 32:] = (0, 0, 255)
  a[20:, 32:] = (0, 255, 0)
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
  Image.fromarray(a).save(tmp_path / 'r.jpg', exif=exif, quality=95)
  img = inference.load_image(tmp_path / 'r.jpg')
  stored = cv2.imread(str(tmp_path / 'r.jpg'), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  assert stored.shape == (40, 64, 3) and img.shape == (64, 40, 3)
  np.testing.assert_array_equal(img, np.rot90(stored, -1))
  # The displayed top-left is the stored bottom-left: red (RGB) = BGR (0, 0, 255).
  assert img[2, 2, 2] > 200 and img[2, 2, 0] < 60


def test_load_image_errors(tmp_path):
  (tmp_path / 'empty.jpg').write_bytes(b'')
  (tmp_path / 'junk.jpg').write_bytes(b'not an image at all')
  with pytest.raises(DaslError, match='empty file'):
    inference.load_image(tmp_path / 'empty.jpg')
  with pytest.raises(DaslError, match='junk.jpg: not a readable image'):
    inference.load_image(tmp_path / 'junk.jpg')
  with pytest.raises(DaslError, match='not found'):
    inference.load_image(tmp_path / 'nope.png')


# ----------------------------------------------------------------------------
# The regressor and its FLM, against a numpy re-derivation.


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  path = make_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny4')
  restored = checkpoint.restore(path)
  models = inference.face_models(restored)
  return path, restored, models


def _np_landmarks(lm_model, p):
  u = np.asarray(lm_model.u, np.float64).reshape(68, 3)
  ws = np.asarray(lm_model.w_shp, np.float64).reshape(68, 3, 40)
  we = np.asarray(lm_model.w_exp, np.float64).reshape(68, 3, 10)
  out = []
  for q in np.asarray(p, np.float64):
    pose = q[:12].reshape(3, 4)
    s = u + ws @ q[12:52] + we @ q[52:62]
    cam = s @ pose[:, :3].T + pose[:, 3]
    out.append(np.stack([cam[:, 0], 121 - cam[:, 1]], 1))  # v1 convention
  return np.array(out)


def _np_sel18(l68):
  return np.stack([l68[:, list(i)].mean(1) if isinstance(i, tuple) else l68[:, i]
                   for i in SEL18], 1)


def _np_input(crops, pts18):
  x = (crops.astype(np.float32) - 127.5) / 128
  m = -np.ones(crops.shape[:3], np.float32)
  for b, pts in enumerate(pts18):
    for px, py in pts:
      m[b, int(np.clip(np.floor(py), 0, 119)), int(np.clip(np.floor(px), 0, 119))] = 1
  return np.concatenate([x, m[..., None]], -1)


def test_bootstrap_and_detector_flm_match_numpy(tiny):
  _, restored, models = tiny
  pred = inference.Predictor(restored, models.landmarks, batch_size=4, bootstrap_iters=2)
  rng = np.random.default_rng(1)
  crops = rng.integers(0, 256, (3, 120, 120, 3), dtype=np.uint8)
  mean, std = restored.param_stats.mean, restored.param_stats.std
  lm = models.landmarks

  apply = jax.jit(restored.module.apply)

  def run(pts18):
    # FLM pixels are floors: keep the points clear of pixel edges, so float32
    # (JAX) and float64 (here) rounding cannot pick different pixels.
    frac = np.abs(pts18 - np.round(pts18))
    assert frac.min() > 1e-3, 'a test point sits on a pixel edge; change the seed'
    w = np.asarray(apply(restored.variables, _np_input(crops, pts18)))
    p = w * std + mean
    return p, _np_landmarks(lm, p)

  start = np.broadcast_to(_np_sel18(_np_landmarks(lm, mean[None])), (3, 18, 2))
  p1, l1 = run(start)
  p2, l2 = run(_np_sel18(l1))
  got = pred.predict_crops(crops)  # 2 passes
  np.testing.assert_allclose(got['params'], p2, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got['lms68'], l2, atol=1e-3)
  # The second pass saw a different FLM than the first (the test has teeth).
  assert np.abs(l2 - l1).max() > 0.5
  got1 = pred.predict_crops(crops, iters=1)
  np.testing.assert_allclose(got1['lms68'], l1, atol=1e-3)
  # Detector landmarks: one pass from their 18 points.
  det = l1 + rng.normal(0, 3, l1.shape)
  pd, ld = run(_np_sel18(det))
  np.testing.assert_allclose(pred.predict_crops(crops, det)['lms68'], ld, atol=1e-3)
  # Batching pads to powers of two and splits big inputs: same numbers.
  many = np.concatenate([crops, crops[:1], crops])  # two batches of 4 (no new shape)
  np.testing.assert_allclose(pred.predict_crops(many)['lms68'][-3:], l2, atol=1e-3)


# ----------------------------------------------------------------------------
# The released 3DDFA_V2 model against its published outputs.


@pytest.fixture(scope='module')
def mb05(tmp_path_factory):
  from experiments.convert_checkpoint import convert
  pth = asset_path('pretrained', 'mb05_120x120.pth')
  out = tmp_path_factory.mktemp('mb05')
  return convert(str(pth), str(out / 'mb05')), convert(str(pth), str(out / 'mb05_4ch'),
                                                      in_channels=4)


@requires_assets('pretrained', 'mb05_reference_params62.npy')
@requires_assets('bfm', 'keypoints68', 'u_base.txt')
def test_released_model_matches_reference_outputs(mb05, assets):
  from dasl_jax.evaluation import aflw2000
  ds = aflw2000.load(assets / 'aflw2000-3d')
  idx = np.arange(0, 2000, 125)  # 16 crops
  crops = ds.load_crops(idx)
  ref_p = np.load(assets / 'pretrained' / 'mb05_reference_params62.npy')[idx]
  ref_l = np.load(assets / 'pretrained' / 'mb05_reference_lms68_crop.npy')[idx].transpose(0, 2, 1)
  outs = []
  for path in mb05:
    r = checkpoint.restore(path)
    pred = inference.Predictor(r, inference.face_models(r).landmarks, batch_size=16)
    assert pred.convention == 'v2'
    out = pred.predict_crops(crops)
    # Relative to each parameter's range (shape coefficients are ~1e5).
    rel = np.abs(out['params'] - ref_p) / np.abs(ref_p).max(0)
    assert rel.max() < 1e-3, rel.max()
    np.testing.assert_allclose(out['lms68'], ref_l, atol=0.02)
    outs.append(out)
  # Zero FLM weights: the 4-channel copy equals the 3-channel model, with
  # detector landmarks and self-bootstrapped alike.
  r4 = checkpoint.restore(mb05[1])
  pred4 = inference.Predictor(r4, inference.face_models(r4).landmarks, batch_size=16)
  det = ds.detector68[idx]
  ok = np.all(np.isfinite(det), axis=(1, 2))
  # Same criterion as above, relative to each parameter's range: the 4-channel
  # stem sums one more (zero) channel, so float rounding differs slightly.
  p4 = pred4.predict_crops(crops[ok], det[ok])['params']
  rel4 = np.abs(p4 - outs[0]['params'][ok]) / np.abs(ref_p[ok]).max(0)
  assert rel4.max() < 1e-4, rel4.max()


# ----------------------------------------------------------------------------
# The command, in-process and as a subprocess.


def _face_image(tmp_path, name='two.png'):
  """A 300x200 image with two flat grey 'faces' (boxes given by file)."""
  img = np.full((200, 300, 3), 40, np.uint8)
  cv2.circle(img, (80, 100), 50, (150, 170, 200), -1)
  cv2.circle(img, (220, 100), 45, (140, 160, 190), -1)
  cv2.imwrite(str(tmp_path / name), img)
  return tmp_path / name


def test_runner_outputs(tiny, tmp_path):
  path, _, _ = tiny
  img_path = _face_image(tmp_path)
  boxes = tmp_path / 'boxes.json'
  boxes.write_text(json.dumps({'two.png': [[30, 50, 130, 150, 0.9], [175, 55, 265, 145],
                                           [10, 10, 20, 20]]}))
  out = tmp_path / 'out'
  runner = inference.Runner(path, out, boxes=str(boxes), min_face=24, depth=True)
  rec = runner.image(img_path, inference.load_image(img_path))
  assert len(rec['faces']) == 2
  assert any('below --min_face 24' in m for m in rec['messages'])
  for f, box in zip(rec['faces'], ([30, 50, 130, 150], [175, 55, 265, 145])):
    assert f['box'] == box and len(f['params']) == 62 and len(f['landmarks68']) == 68
    # A 4-channel model: the detector's crop bootstraps its FLM, the refined crop (the
    # default --refine 1) draws it from the first pass's landmarks.
    assert f['flm'] == 'previous_pass' and {'yaw', 'pitch', 'roll'} <= set(f)
    lms = np.array(f['landmarks68'])[:, :2]
    sx, sy, ex, ey = f['roi_box']
    assert np.all((lms > [sx, sy]) & (lms < [ex, ey]))  # inside its crop box
    assert Path(f['mesh_obj']).exists() and Path(f['mesh_ply']).exists()
  # Meshes in 3DDFA_V2's axes by default: the landmark vertices of the OBJ are
  # the JSON's image landmarks with y = image height - y.
  kp = np.asarray(runner.dense.keypoints)
  for k, f in enumerate(rec['faces']):
    rows = [l.split()[1:4] for l in Path(f['mesh_obj']).read_text().splitlines()
            if l.startswith('v ')]
    v = np.array(rows, float)[kp]
    want = np.array(f['landmarks68'])
    np.testing.assert_allclose(v[:, 0], want[:, 0], atol=2e-3)
    np.testing.assert_allclose(v[:, 1], 200 - want[:, 1], atol=2e-3)
  assert rec['mesh_axes'] == '3ddfa'
  on_disk = json.loads((out / 'two.json').read_text())
  assert on_disk['faces'][0]['params'] == rec['faces'][0]['params']
  ov = cv2.imread(str(out / 'two_overlay.png'))
  assert ov.shape == (200, 300, 3) and not np.array_equal(ov, inference.load_image(img_path))
  assert cv2.imread(str(out / 'two_depth.png'), cv2.IMREAD_UNCHANGED).max() > 0
  # An image the box file does not name: no faces, a message, a record.
  blank = tmp_path / 'blank.png'
  cv2.imwrite(str(blank), np.zeros((50, 60, 3), np.uint8))
  rec = runner.image(blank, inference.load_image(blank))
  assert rec['faces'] == [] and any('no face' in m for m in rec['messages'])
  # A video: every 2nd of 5 frames; no boxes for its frames, so no faces.
  vid = tmp_path / 'clip.avi'
  w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
  for k in range(5):
    w.write(np.full((48, 64, 3), 50 * k, np.uint8))
  w.release()
  rec = runner.video(vid, every=2)
  assert [f['frame'] for f in rec['frames']] == [0, 2, 4]
  assert json.loads((out / 'clip.json').read_text())['frames'][1]['faces'] == []


def test_runner_dot_dtype_bfloat16(tiny, tmp_path):
  # --dot_dtype reaches the predictor's module (checkpoint.with_dot_dtype; its
  # numbers against float32 are checked in tests/inference/test_export.py).
  path, restored, _ = tiny
  boxes = tmp_path / 'b.json'
  boxes.write_text('{}')
  runner = inference.Runner(path, tmp_path / 'out', boxes=str(boxes), dot_dtype='bfloat16')
  assert runner.predictor.module.dot_dtype == jax.numpy.bfloat16
  assert restored.module.dot_dtype is None
  with pytest.raises(DaslError, match="--dot_dtype: must be one of float32, bfloat16, got 'f16'"):
    inference.Runner(path, tmp_path / 'out', boxes=str(boxes), dot_dtype='f16')


def test_command_exit_codes(tiny, tmp_path):
  path, _, _ = tiny
  folder = tmp_path / 'in'
  folder.mkdir()
  cv2.imwrite(str(folder / 'blank.png'), np.full((80, 100), 128, np.uint8))  # grey, no face
  (folder / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
  (folder / 'notes.txt').write_text('not an image')
  (folder / 'sub').mkdir()
  cmd = [sys.executable, '-m', 'experiments.predict', f'--checkpoint={path}',
         f'--out={tmp_path / "out"}']
  # A mixed folder: what is skipped, and why, is in the summary as warnings; exit 0.
  r = subprocess.run(cmd + ['--input', str(folder)], cwd=ROOT, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr
  warnings = [l for l in r.stderr.splitlines() if l.startswith('warning: skipped')]
  assert warnings == [f'warning: skipped {folder / "notes.txt"}: not an image or video (.txt)',
                      f'warning: skipped {folder / "sub"}: a folder: not searched (folders '
                      'are read one level deep)',
                      f'warning: skipped {folder / "broken.jpg"}: not a readable image '
                      '(OpenCV cannot decode it)'], r.stderr
  assert '1 input(s) read, 0 face(s), 3 skipped' in r.stdout, r.stdout
  assert 'backend: regressor jax' in r.stderr
  # Several paths after --input (what a shell glob gives): each one processed.
  r = subprocess.run(cmd + ['--input', str(folder / 'blank.png'), str(folder / 'broken.jpg')],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert 'no face found' in r.stderr and 'broken.jpg: not a readable image' in r.stderr
  assert json.loads((tmp_path / 'out' / 'blank.json').read_text())['faces'] == []
  assert 'error' in json.loads((tmp_path / 'out' / 'broken.json').read_text())
  # A --boxes entry wholly outside its image: one line naming it, exit 2.
  boxes = tmp_path / 'outside.json'
  boxes.write_text(json.dumps({'blank.png': [[150, 10, 190, 50]]}))  # the image is 100 wide
  r = subprocess.run(cmd + ['--input', str(folder / 'blank.png'), f'--boxes={boxes}'],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip().splitlines()[-1] == (
      "error: --boxes entry 'blank.png', box 0 [150.0, 10.0, 190.0, 50.0]: lies wholly "
      'outside the image (100 x 80 px)')
  r = subprocess.run(cmd + [f'--input={folder / "broken.jpg"}'], cwd=ROOT, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith('error: ')
  # An argument that is neither an option nor a file, and an unknown option:
  # one line each, exit 2, nothing written.
  for extra, want in (('nope', '--input nope: no such file or folder'),
                      ('--nope=1', "error: Unknown command line flag 'nope'")):
    r = subprocess.run(cmd + [f'--input={folder / "blank.png"}', extra, '--out=' + str(tmp_path / 'o2')],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and want in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert not (tmp_path / 'o2').exists()


class _FixedPredictor:
  """A stand-in regressor: every crop gets the same 68 crop-pixel landmarks (a grid
  over 30..90 px); records the crops it was given."""
  in_channels, convention = 3, 'v1'

  def __init__(self, lm_model):
    self.lm_model = lm_model
    g = np.stack(np.meshgrid(np.linspace(30, 90, 17), np.linspace(35, 95, 4)), -1)
    self.lms = g.reshape(-1, 2)[:68].astype(np.float32)
    self.calls = []

  def predict_crops(self, crops, lms68=None):
    self.calls.append(np.array(crops))
    n = len(crops)
    return {'lms68': np.broadcast_to(self.lms, (n, 68, 2)).copy(),
            'params': np.zeros((n, 62), np.float32), 'pose': np.zeros((n, 3), np.float32),
            'whitened': np.zeros((n, 62), np.float32)}


def test_refine_recrops_around_the_landmarks_by_3ddfa_rule(tiny):
  """--refine: the second crop is 3DDFA's landmark crop of the first pass's image
  landmarks (typed here in numpy: sqrt(2) x the longer side of their box, same
  centre), cut from the image; the face's ROI and landmarks are the last pass's."""
  from dasl_jax.geometry import crop as C
  _, _, models = tiny
  img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
  box = np.array([[120.0, 80.0, 220.0, 200.0, 0.9]])
  for refine in (0, 1, 2):
    pred = _FixedPredictor(models.landmarks.landmark_model())
    faces, _ = inference.predict_image(pred, img, boxes=box, refine=refine)
    assert len(pred.calls) == refine + 1
    roi = C.roi_box_from_bbox(box[0])  # 3DDFA_V2's box rule (tests/geometry checks it)
    for k in range(refine):
      lms = pred.lms * (roi[2:] - roi[:2]) / 120 + roi[:2]
      lo, hi = lms.min(0), lms.max(0)
      side = np.sqrt(2) * (hi - lo).max()
      roi = np.r_[(lo + hi) / 2 - side / 2, (lo + hi) / 2 + side / 2]
      np.testing.assert_array_equal(pred.calls[k + 1][0], C.crop_image(img, roi))
    np.testing.assert_allclose(faces[0].roi_box, roi, atol=1e-4)
    np.testing.assert_allclose(faces[0].lms68, pred.lms * (roi[2:] - roi[:2]) / 120 + roi[:2],
                               atol=1e-3)
    np.testing.assert_array_equal(faces[0].box, box[0])  # the detector's box is kept
  with pytest.raises(DaslError, match='--refine must be >= 0'):
    inference.predict_image(pred, img, boxes=box, refine=-1)


def test_landmark_depth_matches_numpy(tiny):
  """landmarks68's z: camera z of the 68 points (numpy here) times the mean crop ->
  image scale, shifted so each face's minimum is 0; the meshes' z differs from it
  by one constant per face."""
  _, restored, models = tiny
  pred = inference.Predictor(restored, models.landmarks)
  img = np.full((200, 300, 3), 60, np.uint8)
  cv2.circle(img, (100, 100), 50, (150, 170, 200), -1)
  faces, _ = inference.predict_image(pred, img, boxes=np.array([[50, 50, 150, 150, 1.0]]))
  f = faces[0]
  u = np.asarray(pred.lm_model.u, np.float64).reshape(68, 3)
  ws = np.asarray(pred.lm_model.w_shp, np.float64).reshape(68, 3, 40)
  we = np.asarray(pred.lm_model.w_exp, np.float64).reshape(68, 3, 10)
  q = np.asarray(f.params, np.float64)
  z = ((u + ws @ q[12:52] + we @ q[52:62]) @ q[:12].reshape(3, 4)[:, :3].T)[:, 2]
  sx, sy, ex, ey = f.roi_box
  z = z * ((ex - sx) + (ey - sy)) / 240
  np.testing.assert_allclose(f.depth68, z - z.min(), atol=1e-3 * np.ptp(z))
  rec = f.record()
  assert np.asarray(rec['landmarks68']).shape == (68, 3)
  np.testing.assert_allclose(np.asarray(rec['landmarks68'])[:, 2], f.depth68, atol=1e-3)
  # The mesh's z at the landmark vertices (Runner's dense model) minus the landmarks' z:
  # one constant (same scale and direction, another zero).
  runner_dense = models.dense
  if runner_dense is not None:
    from dasl_jax.inference.predictor import dense_vertices, to_image_space
    v = to_image_space(dense_vertices(runner_dense, q[None], pred.convention)[0], f.roi_box)
    dz = v[np.asarray(runner_dense.keypoints), 2] - f.depth68
    assert np.ptp(dz) < 1e-2 * np.ptp(z), np.ptp(dz)


def test_boxes_wholly_outside_their_image_are_refused(tiny, tmp_path):
  from dasl_jax.errors import BadInput
  path, _, _ = tiny
  boxes = tmp_path / 'b.json'
  boxes.write_text(json.dumps({'one.png': [[10, 10, 60, 60], [-80, 20, -5, 90]]}))
  runner = inference.Runner(path, tmp_path / 'out', boxes=str(boxes), meshes=False,
                            overlay=False)
  img = np.zeros((100, 120, 3), np.uint8)
  with pytest.raises(BadInput, match=r"--boxes entry 'one.png', box 1 \[-80.0, 20.0, -5.0, "
                                     r"90.0\]: lies wholly outside the image \(120 x 100 px\)"):
    runner.faces(img, 'dir/one.png')


def test_a_video_whose_frames_change_size_is_refused(tmp_path, monkeypatch):
  """OpenCV hands out frames as the stream has them; one of another size stops the
  video with one line (tracking, smoothing and the overlay writer assume one size)."""
  from dasl_jax.errors import BadInput
  from dasl_jax.io import media

  class Capture:
    def __init__(self, path):
      self.frames = [np.zeros((48, 64, 3), np.uint8)] * 3 + [np.zeros((60, 80, 3), np.uint8)]

    def isOpened(self):
      return True

    def get(self, prop):
      return 4

    def read(self):
      return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self):
      pass

  monkeypatch.setattr(media.cv2, 'VideoCapture', Capture)
  got = []
  with pytest.raises(BadInput, match=r'v.avi: frame 3 is 80 x 60 px, the frames before it '
                                     r'64 x 48; a video whose frames change size'):
    for i, f in media.video_frames(tmp_path / 'v.avi'):
      got.append(i)
  assert got == [0, 1, 2]


def test_list_inputs_several_paths_and_folders(tmp_path):
  for name in ('b.png', 'a.jpg', 'notes.txt'):
    (tmp_path / name).write_bytes(b'x')
  sub = tmp_path / 'sub'
  sub.mkdir()
  (sub / 'c.mp4').write_bytes(b'x')
  (sub / 'd.PNG').write_bytes(b'x')
  got = inference.list_inputs([tmp_path / 'b.png', str(sub), tmp_path / 'a.jpg',
                               tmp_path / 'b.png'])  # a repeat is processed once
  assert got == [tmp_path / 'b.png', sub / 'c.mp4', sub / 'd.PNG', tmp_path / 'a.jpg']
  assert inference.list_inputs(str(tmp_path)) == [tmp_path / 'a.jpg', tmp_path / 'b.png']
  from dasl_jax.io.input_files import scan_inputs
  files, skipped = scan_inputs(str(tmp_path))
  assert files == [tmp_path / 'a.jpg', tmp_path / 'b.png']
  assert skipped == [(tmp_path / 'notes.txt', 'not an image or video (.txt)'),
                     (sub, 'a folder: not searched (folders are read one level deep)')]
  with pytest.raises(DaslError, match='--input bogus: no such file or folder'):
    inference.list_inputs([tmp_path / 'a.jpg', 'bogus'])
  (tmp_path / 'd.jpg').write_bytes(b'x')
  with pytest.raises(DaslError, match='would both write d.json'):
    inference.list_inputs([sub, tmp_path / 'd.jpg'])
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(DaslError, match='holds no images or videos'):
    inference.list_inputs([empty])
