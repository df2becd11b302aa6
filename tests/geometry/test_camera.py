"""Camera: weak-perspective transform, pixel conventions, ROI boxes, head pose.

Every reference here is re-derived in numpy / math from METHOD.md section 1 and
3DDFA_V2's ``utils/pose.py`` (P2sRt, matrix2angle), not taken from dasl_jax.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dasl_jax.geometry import camera
from dasl_jax.errors import DaslError
from tests.helpers.asset_marks import asset_path, requires_assets


def _rx(a):
  c, s = math.cos(a), math.sin(a)
  return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
  c, s = math.cos(a), math.sin(a)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
  c, s = math.cos(a), math.sin(a)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _rotation(yaw, pitch, roll):
  """The composition 3DDFA's matrix2angle inverts (degrees in).

  Row 2 of Rz Ry(b) Rx(a) is (-sin b, cos b sin a, cos b cos a) and column 0 is
  (cos c cos b, sin c cos b, -sin b), so asin(R[2,0]) = -b: yaw enters as Ry(-yaw).
  """
  y, p, r = np.deg2rad([yaw, pitch, roll])
  return _rz(r) @ _ry(-y) @ _rx(p)


def _matrix2angle(R):
  """3DDFA_V2 utils/pose.py matrix2angle, on one matrix, in degrees."""
  if R[2, 0] > 0.998:
    z = 0.0
    x = math.pi / 2
    y = z + math.atan2(-R[0, 1], -R[0, 2])
  elif R[2, 0] < -0.998:
    z = 0.0
    x = -math.pi / 2
    y = -z + math.atan2(R[0, 1], R[0, 2])
  else:
    x = math.asin(R[2, 0])
    y = math.atan2(R[2, 1] / math.cos(x), R[2, 2] / math.cos(x))
    z = math.atan2(R[1, 0] / math.cos(x), R[0, 0] / math.cos(x))
  return np.rad2deg([x, y, z])


def _p2srt(fR):
  """3DDFA_V2 P2sRt on the 3x3 part: scale and rotation."""
  r1, r2 = fR[0], fR[1]
  s = (np.linalg.norm(r1) + np.linalg.norm(r2)) / 2
  r1 = r1 / np.linalg.norm(r1)
  r2 = r2 / np.linalg.norm(r2)
  return s, np.stack([r1, r2, np.cross(r1, r2)])


# ---------------------------------------------------------------------------
# Transform, pixel conventions, crop boxes.


def test_transform_matches_numpy(rng):
  pts = rng.normal(size=(2, 7, 3))
  fR = rng.normal(size=(2, 3, 3))
  t = rng.normal(size=(2, 3))
  want = np.stack([(fR[b] @ pts[b].T).T + t[b] for b in range(2)])
  np.testing.assert_allclose(np.asarray(camera.transform(pts, fR, t)), want, rtol=1e-5, atol=1e-5)


def test_pixel_conventions_by_hand():
  pts = np.array([[10.0, 20.0, 5.0], [0.0, 0.0, 0.0], [119.5, 120.0, -3.0]], np.float32)
  v1 = np.asarray(camera.to_crop_pixels(pts, 'v1'))
  v2 = np.asarray(camera.to_crop_pixels(pts, 'v2'))
  np.testing.assert_array_equal(v1, [[10, 101], [0, 121], [119.5, 1]])       # (x, 121 - y)
  np.testing.assert_array_equal(v2, [[9, 100], [-1, 120], [118.5, 0]])       # (x - 1, 120 - y)
  # The two conventions differ by one crop pixel in x and in y.
  np.testing.assert_array_equal(v1 - v2, np.ones_like(v1))
  for conv in ('v1', 'v2'):
    back = np.asarray(camera.from_crop_pixels(camera.to_crop_pixels(pts, conv), conv))
    np.testing.assert_array_equal(back, pts[:, :2])
  # Another crop size moves the flip line.
  np.testing.assert_array_equal(np.asarray(camera.to_crop_pixels(pts[:1], 'v1', size=64)), [[10, 45]])
  np.testing.assert_array_equal(np.asarray(camera.to_crop_pixels(pts[:1], 'v2', size=64)), [[9, 44]])


def test_unknown_convention_is_dasl_error():
  with pytest.raises(DaslError, match='v3'):
    camera.to_crop_pixels(np.zeros((1, 3)), 'v3')
  with pytest.raises(DaslError, match='V1'):
    camera.from_crop_pixels(np.zeros((1, 2)), 'V1')


def test_project_is_transform_then_flip(rng):
  pts = rng.normal(size=(5, 3)) * 50
  fR = rng.normal(size=(3, 3)) * 1e-3
  t = np.array([60.0, 55.0, 3.0])
  cam = (fR @ pts.T).T + t
  for conv, (dx, c) in (('v1', (0, 121)), ('v2', (-1, 120))):
    want = np.stack([cam[:, 0] + dx, c - cam[:, 1]], -1)
    np.testing.assert_allclose(np.asarray(camera.project(pts, fR, t, conv)), want, atol=1e-4)


def test_crop_image_round_trip_numpy(rng):
  uv = rng.uniform(-10, 130, size=(3, 21, 2)).astype(np.float32)
  roi = np.array([[10, 20, 250, 260], [-30, 5, 90, 125], [100.5, 50.25, 160.5, 110.25]], np.float32)
  want = np.empty_like(uv)
  for b, (sx, sy, ex, ey) in enumerate(roi):
    want[b, :, 0] = uv[b, :, 0] * (ex - sx) / 120 + sx
    want[b, :, 1] = uv[b, :, 1] * (ey - sy) / 120 + sy
  img = np.asarray(camera.crop_to_image(uv, roi))
  np.testing.assert_allclose(img, want, rtol=1e-5, atol=1e-3)
  # aflw-wild stores int boxes: x_crop = (x - sx) * 120 / (ex - sx).
  roi_int = np.array([12, 30, 212, 230])
  x = np.array([[112.0, 130.0], [12.0, 230.0]], np.float32)
  np.testing.assert_allclose(np.asarray(camera.image_to_crop(x, roi_int)), [[60, 60], [0, 120]], atol=1e-5)
  np.testing.assert_allclose(np.asarray(camera.image_to_crop(img, roi)), uv, rtol=1e-5, atol=1e-3)


@requires_assets('pretrained', 'mb05_reference_lms68_crop.npy')
@requires_assets('aflw2000-3d', 'test.configs', 'AFLW2000-3D_crop.roi_box.npy')
@requires_assets('aflw2000-3d', 'test.configs', 'AFLW2000-3D.pts68.npy')
def test_reference_landmarks_to_image_give_published_nme():
  """crop_to_image on the released model's landmarks reproduces METHOD's 3.350 plain mean."""
  lms = np.load(asset_path('pretrained', 'mb05_reference_lms68_crop.npy')).transpose(0, 2, 1)
  roi = np.load(asset_path('aflw2000-3d', 'test.configs', 'AFLW2000-3D_crop.roi_box.npy'))
  gt = np.load(asset_path('aflw2000-3d', 'test.configs', 'AFLW2000-3D.pts68.npy'))[:, :2].transpose(0, 2, 1)
  img = np.asarray(camera.crop_to_image(lms, roi))
  wh = gt.max(1) - gt.min(1)
  nme = np.linalg.norm(img - gt, axis=-1).mean(-1) / np.sqrt(wh[:, 0] * wh[:, 1])
  assert abs(100 * nme.mean() - 3.350) < 0.0006, 100 * nme.mean()


# ---------------------------------------------------------------------------
# Scale, rotation and Euler angles.


def test_composition_is_what_matrix2angle_inverts(rng):
  for _ in range(50):
    yaw, pitch, roll = rng.uniform(-85, 85), rng.uniform(-175, 175), rng.uniform(-175, 175)
    np.testing.assert_allclose(_matrix2angle(_rotation(yaw, pitch, roll)), [yaw, pitch, roll], atol=1e-9)


def test_pose_angles_recovers_known_angles(rng):
  angles = np.stack([rng.uniform(-85, 85, 64), rng.uniform(-175, 175, 64),
                     rng.uniform(-175, 175, 64)], -1)
  scales = rng.uniform(1e-4, 2e-3, 64)
  fR = np.stack([s * _rotation(*a) for s, a in zip(scales, angles)]).astype(np.float32)
  got = np.asarray(camera.pose_angles(fR))
  np.testing.assert_allclose(got, angles, atol=2e-2)
  s, R = camera.scale_rotation(fR)
  np.testing.assert_allclose(np.asarray(s), scales, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(R), fR / scales[:, None, None], atol=1e-5)


def test_scale_rotation_matches_p2srt_on_non_orthogonal(rng):
  fR = rng.normal(size=(8, 3, 3))
  s, R = camera.scale_rotation(fR.astype(np.float32))
  for b in range(8):
    ws, wR = _p2srt(fR[b])
    np.testing.assert_allclose(float(s[b]), ws, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(R[b]), wR, atol=1e-5)


def test_rotation_to_angles_matches_matrix2angle_including_gimbal(rng):
  mats = [_rotation(*a) for a in rng.uniform([-89, -179, -179], [89, 179, 179], size=(40, 3))]
  # Gimbal cases: |R[2,0]| > 0.998 (yaw beyond ~86.4 degrees) and exactly +-90.
  for yaw in (90, -90, 87.5, -87.5, 86.5, -86.5, 86.3, -86.3):
    for pitch, roll in ((10, 20), (-40, 5), (0, 0), (150, -60)):
      mats.append(_rotation(yaw, pitch, roll))
  mats = np.stack(mats)
  got = np.asarray(camera.rotation_to_angles(jnp.asarray(mats, jnp.float32)))
  want = np.stack([_matrix2angle(m) for m in mats])
  gimbal = np.abs(mats[:, 2, 0]) > 0.998
  assert gimbal.sum() >= 24
  # float32 pitch near the gimbal is ill-conditioned only when near the threshold.
  np.testing.assert_allclose(got, want, atol=2e-2)
  np.testing.assert_array_equal(got[gimbal, 2], 0)
  np.testing.assert_allclose(np.abs(got[gimbal, 0]), 90)


def test_exact_gimbal_pitch_absorbs_roll():
  # yaw = +90: R[0] = (0, -sin(p + r), -cos(p + r)) -> pitch = p + r, roll = 0.
  got = np.asarray(camera.rotation_to_angles(jnp.asarray(_rotation(90, 10, 20), jnp.float32)))
  np.testing.assert_allclose(got, [90, 30, 0], atol=1e-3)
  # yaw = -90: R[0] = (0, sin(p - r), cos(p - r)) -> pitch = p - r.
  got = np.asarray(camera.rotation_to_angles(jnp.asarray(_rotation(-90, 10, 20), jnp.float32)))
  np.testing.assert_allclose(got, [-90, -10, 0], atol=1e-3)


def test_camera_functions_jit_vmap(rng):
  pts = rng.normal(size=(4, 6, 3)).astype(np.float32)
  fR = rng.normal(size=(4, 3, 3)).astype(np.float32)
  t = rng.normal(size=(4, 3)).astype(np.float32)
  roi = np.array([[0, 0, 240, 240]] * 4, np.float32)
  cam = np.einsum('bij,bkj->bki', fR, pts) + t[:, None]
  for conv, dx, c in (('v1', 0, 121), ('v2', -1, 120)):
    want = 2 * np.stack([cam[..., 0] + dx, c - cam[..., 1]], -1)  # roi scale 240 / 120
    f = lambda a, b, c, r: camera.crop_to_image(camera.project(a, b, c, conv), r)
    np.testing.assert_allclose(np.asarray(jax.jit(f)(pts, fR, t, roi)), want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(f))(pts, fR, t, roi)), want,
                               rtol=1e-5, atol=1e-4)
  R = np.stack([_rotation(10, -20, 30), _rotation(-50, 5, -5)])
  np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(camera.pose_angles))(R.astype(np.float32) * 3)),
                             [[10, -20, 30], [-50, 5, -5]], atol=1e-3)


def test_project_gradients_match_finite_differences(rng):
  pts = rng.normal(size=(5, 3)) * 10
  fR = rng.normal(size=(3, 3))
  t = rng.normal(size=3)
  w = rng.normal(size=(5, 2))

  with jax.enable_x64(True):
    loss = jax.jit(lambda fR, t: jnp.sum(camera.project(jnp.asarray(pts), fR, t, 'v1') * w))
    gfR, gt = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(fR), jnp.asarray(t))
    eps = 1e-6
    for i in range(3):
      for j in range(3):
        d = np.zeros((3, 3))
        d[i, j] = eps
        fd = (loss(jnp.asarray(fR + d), jnp.asarray(t)) - loss(jnp.asarray(fR - d), jnp.asarray(t))) / (2 * eps)
        np.testing.assert_allclose(float(gfR[i, j]), float(fd), rtol=1e-6, atol=1e-6)
  # Analytic: v1 flips y, so d/dt = (sum w_x, -sum w_y, 0).
  np.testing.assert_allclose(np.asarray(gt), [w[:, 0].sum(), -w[:, 1].sum(), 0], atol=1e-9)


def test_pose_angles_gradient_finite(rng):
  fR = jnp.asarray(1e-3 * _rotation(30, -20, 10), jnp.float32)
  g = jax.jit(jax.grad(lambda m: camera.pose_angles(m).sum()))(fR)
  assert np.all(np.isfinite(np.asarray(g)))
