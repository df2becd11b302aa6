"""Augmentation against independent reasoning: flips are involutions, landmarks
follow the image content, parameters follow the landmarks."""
import ml_collections
import numpy as np
import pytest

from tests.helpers import mirror_reference
from dasl_jax.face_model import morphable_model as MM
from dasl_jax.data import augment as A
from dasl_jax.geometry import mirror as MIR
from dasl_jax.data import readers as R


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(flip=0.5, max_shift=0.05, max_scale=0.05,
                                     brightness=0.2, contrast=0.2, saturation=0.2))
  c.update(kw)
  return c


def _no_colour(flip, scale=1.0, shift=(0.0, 0.0)):
  return dict(flip=flip, scale=scale, shift=np.asarray(shift, float), brightness=0.0,
              contrast=1.0, saturation=1.0)


def _example(rng, with_3d=False):
  ex = {'image': rng.integers(0, 256, (120, 120, 3), dtype=np.uint8),
        'points18': rng.uniform(20, 100, (18, 2)).astype(np.float32),
        'mask18': (rng.random(18) > 0.2).astype(np.float32)}
  ex['points18'][ex['mask18'] == 0] = 0
  if with_3d:
    ex['lms68'] = rng.uniform(20, 100, (68, 2)).astype(np.float32)
  return ex


def test_flip_twice_is_identity(rng):
  ex = _example(rng, with_3d=True)
  once = A.apply(ex, _no_colour(True))
  twice = A.apply(once, _no_colour(True))
  np.testing.assert_array_equal(twice['image'], ex['image'])
  np.testing.assert_array_equal(once['image'], ex['image'][:, ::-1])
  np.testing.assert_allclose(twice['points18'], ex['points18'], atol=1e-4)
  np.testing.assert_array_equal(twice['mask18'], ex['mask18'])
  np.testing.assert_allclose(twice['lms68'], ex['lms68'], atol=1e-4)
  # Independent: a flipped x is 119 - x (pixel centres at integer columns).
  vis = ex['mask18'][MIR.FLIP18] > 0
  np.testing.assert_allclose(once['points18'][vis, 0], 119 - ex['points18'][MIR.FLIP18][vis, 0],
                             atol=1e-4)


@pytest.mark.parametrize('flip,scale,shift', [(False, 1.08, (3.0, -4.5)), (True, 0.93, (-2.0, 5.0)),
                                              (True, 1.0, (0.0, 0.0))])
def test_landmarks_follow_image_content(flip, scale, shift):
  """Draw a bright dot at each point, warp, find the dots again."""
  rng = np.random.default_rng(1)
  pts = rng.integers(30, 90, (18, 2)).astype(np.float32)
  keep = np.ones(18, bool)
  for i in range(18):  # well separated dots only
    for j in range(i):
      if keep[j] and np.abs(pts[i] - pts[j]).max() < 8:
        keep[i] = False
  img = np.zeros((120, 120, 3), np.uint8)
  for x, y in pts[keep].astype(int):
    img[y, x] = 255
  ex = {'image': img, 'points18': pts, 'mask18': keep.astype(np.float32)}
  out = A.apply(ex, _no_colour(flip, scale, shift))
  grey = out['image'][..., 0].astype(np.float64)
  for p, m in zip(out['points18'], out['mask18']):
    if not m:
      continue
    x0, y0 = int(round(p[0])), int(round(p[1]))
    win = grey[y0 - 3:y0 + 4, x0 - 3:x0 + 4]
    ys, xs = np.mgrid[y0 - 3:y0 + 4, x0 - 3:x0 + 4]
    assert win.sum() > 0
    cx, cy = (win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()
    assert abs(cx - p[0]) < 0.35 and abs(cy - p[1]) < 0.35, (cx, cy, p)


def test_colour_jitter_independent():
  img = np.random.default_rng(2).integers(40, 200, (8, 8, 3), dtype=np.uint8)
  np.testing.assert_array_equal(A.color_jitter(img, brightness=0.2),
                                np.clip(img.astype(int) + 51, 0, 255))
  grey = A.color_jitter(img, saturation=0.0)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 1])
  np.testing.assert_array_equal(grey[..., 1], grey[..., 2])
  c = A.color_jitter(img, contrast=0.0)
  assert np.ptp(c) == 0


def test_deterministic_from_rng(rng):
  ex = _example(rng)
  a = A.augment(ex, np.random.default_rng([7, 3]), _cfg())
  b = A.augment(ex, np.random.default_rng([7, 3]), _cfg())
  for k in ex:
    np.testing.assert_array_equal(a[k], b[k])


def _lms(model, p, convention):
  return np.asarray(MM.landmarks2d(model, np.asarray(p, np.float32), convention))


@pytest.mark.parametrize('flip', [False, True])
def test_params_follow_landmarks(flip):
  model, stats, ps, conv, _ = mirror_reference.case()
  warper = A.ParamWarper(model, conv, stats)
  errs = []
  for i, p in enumerate(ps):
    lms = _lms(model, p, conv)
    ex = {'image': np.zeros((120, 120, 3), np.uint8), 'points18': R.points18(lms)[0],
          'mask18': np.ones(18, np.float32), 'lms68': lms,
          'params': stats.whiten(p).astype(np.float32)}
    out = A.apply(ex, _no_colour(flip, 1.0 + 0.01 * (i % 7 - 3), (i % 5 - 2.0, 2.0 - i % 3)),
                  warper, stats)
    got = _lms(model, stats.dewhiten(out['params'].astype(np.float64)), conv)
    errs.append(np.linalg.norm(got - out['lms68'], axis=-1).mean())
  errs = np.array(errs)
  if flip:  # the BFM is not exactly symmetric: a least-squares fit, within ~1 px
    assert errs.mean() < 0.8 and errs.max() < 1.5, errs
  else:     # scale and shift are exact
    assert errs.max() < 0.02, errs


def test_colour_jitter_one_pass_matches_step_by_step():
  """The addWeighted form against the float32 steps (saturation, contrast about the
  mean, brightness; round and clip): at most 1 apart, and rarely (ties at .5)."""
  rng = np.random.default_rng(5)
  diffs = []
  for k in range(200):
    img = rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)
    if k % 2:  # smooth, face-like content too
      img = np.clip(img // 4 + 100, 0, 255).astype(np.uint8)
    b, c, s = rng.uniform(-0.3, 0.3), rng.uniform(0.0, 1.5), rng.uniform(0.0, 1.5)
    got = A.color_jitter(img, b, c, s)
    assert got.dtype == np.uint8 and got.shape == img.shape
    diffs.append(np.abs(got.astype(int) - A.color_jitter_reference(img, b, c, s).astype(int)))
  diffs = np.array(diffs)
  assert diffs.max() <= 1
  assert (diffs > 0).mean() < 1e-4
