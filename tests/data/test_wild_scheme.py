"""The wild labels' scheme on the data side: FLM points moved into iBUG's definitions,
augmentation of those points, and dlib's labels (when dlib is installed)."""
import numpy as np
import pytest

from dasl_jax.data import augment as AUG
from dasl_jax.data import readers as R
from dasl_jax.data import wild_scheme as WS
from dasl_jax.face_model import schemes as S
from dasl_jax.face_model.synthetic import build_synthetic_model
from dasl_jax.geometry import landmarks as lm
from tests.conftest import asset_path, requires_assets


class _Wild:
  """A stand-in aflw-wild source: names, 18 label points and masks per row."""

  def __init__(self, names, points, mask):
    self.names, self.points, self.mask = list(names), points, mask
    self.n_rows = len(names)
    self.rows = np.arange(self.n_rows)


def test_flm_points_move_labels_by_the_scheme(monkeypatch, rng):
  model68 = build_synthetic_model(0).landmark_model()
  u = np.asarray(model68.u, np.float64).reshape(68, 3)
  size = np.sqrt(np.prod(u.max(0)[:2] - u.min(0)[:2]))
  offsets = rng.normal(0, 0.03 * size, (21, 3))
  scheme18 = S.aflw21(offsets).subset(lm.SEL18_FROM_AFLW21)
  n = 5
  params = np.zeros((n, 62))
  for i in range(n):
    a = rng.uniform(-1, 1)
    R_ = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    params[i, :12] = np.concatenate([R_ * 65 / size, [[60.0], [60.0], [0.0]]], 1).reshape(-1)
  labels = rng.uniform(20, 100, (n, 18, 2)).astype(np.float32)
  mask = (rng.random((n, 18)) > 0.2).astype(np.float32)
  wild = _Wild([f'{i}.jpg' for i in range(n)], labels, mask)
  monkeypatch.setattr(WS, '_aflw_rows', lambda w: (w, w.rows))
  teacher = {'names': [f'{i}.jpg' for i in (3, 0, 1, 2)], 'params': params[[3, 0, 1, 2]]}
  got = WS.flm_points(wild, scheme18, teacher, model68, 'v2')
  # numpy: the teacher's offset in pixels is the y-flipped fR @ d plus the difference of
  # the base combinations (AFLW's eye and mouth centres are means of more points).
  for i in range(n):
    if i == 4:  # no teacher label: the labels stay
      np.testing.assert_allclose(got[i][mask[i] > 0], labels[i][mask[i] > 0])
      continue
    p = params[i]
    fR, t = p[:12].reshape(3, 4)[:, :3], p[:12].reshape(3, 4)[:, 3]
    shape = u  # zero shape and expression
    cam = (fR @ shape.T).T + t
    pix = np.stack([cam[:, 0] - 1, 120 - cam[:, 1]], 1)
    d = (fR @ scheme18.offsets.T).T
    moved = scheme18.combine @ pix + np.stack([d[:, 0], -d[:, 1]], 1) - lm.SEL18_MATRIX @ pix
    want = np.where(mask[i][:, None] > 0, labels[i] - moved, 0.0)
    np.testing.assert_allclose(got[i], want, atol=2e-3)


def test_augment_moves_flm18_like_points18(rng):
  pts = rng.uniform(10, 110, (18, 2)).astype(np.float32)
  ex = {'image': rng.integers(0, 255, (120, 120, 3), dtype=np.uint8), 'points18': pts,
        'mask18': np.ones(18, np.float32), 'flm18': pts + 3.0}
  draw = {'flip': True, 'scale': 1.03, 'shift': (2.0, -1.0), 'brightness': 0.0,
          'contrast': 1.0, 'saturation': 1.0}
  out = AUG.apply(ex, draw)
  # A flip then scale/shift is affine: the +3 px offset moves with the same linear part.
  M = AUG.affine_matrix(scale=1.03, shift=(2.0, -1.0), flip=True)
  np.testing.assert_allclose(out['flm18'] - out['points18'],
                             np.tile(M[:, :2] @ np.array([3.0, 3.0]), (18, 1)), atol=1e-4)


@requires_assets('aflw-wild', 'images')
def test_dlib_labels_agree_with_aflw_where_its_detector_sees_the_face(tmp_path):
  pytest.importorskip('dlib', reason='dlib is an optional dependency (pip install dlib-bin)')
  pytest.importorskip('face_recognition_models', reason='pip install face-recognition-models')
  from dasl_jax.data import dlib_labels
  from dasl_jax.io.landmark_files import read_landmark_file
  root = asset_path('aflw-wild')
  names = R.read_list(root / 'list.txt')[:40]
  rect = np.array([0.146, 0.125, 0.838, 0.767])  # the calibrated rectangle of these crops
  pts, ok, skipped = dlib_labels.label_crops(root / 'images', names, rect, progress=False)
  assert ok.sum() + len(skipped) == 40 and ok.sum() >= 15
  assert all(v.startswith("dlib's detector finds no face") for v in skipped.values())
  out = tmp_path / 'dlib.csv'
  assert dlib_labels.write_landmark_file(out, names, pts, ok, header='test') == ok.sum()
  back_names, back = read_landmark_file(out)
  assert back_names == [n for n, g in zip(names, ok) if g]
  np.testing.assert_allclose(back, pts[ok], atol=0.006)
  # Against AFLW's hand labels on the same crops, through 3DDFA's plain 68 -> 21 mapping:
  # the eye corners (iBUG and AFLW define them alike) within 8% of the crop on average.
  src = R.AflwWildSource(root, skip_bad_rows=True)
  where = {n: i for i, n in enumerate(src.names)}
  corners = [6, 8, 9, 11]
  errs = []
  for n, p in zip(back_names, back):
    r = where[n]
    a21 = lm.AFLW21_MATRIX @ p
    vis = src.vis21[r][corners] > 0
    errs += list(np.linalg.norm(a21[corners] - src.pts21_crop[r][corners], axis=1)[vis] / 120)
  assert np.mean(errs) < 0.08, np.mean(errs)
