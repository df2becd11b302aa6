"""Weak-perspective camera, pixel conventions, crop boxes and head pose.

The one place for: the y-flip into crop pixels (two conventions), crop <-> image
mapping through an ROI box, and rotation -> yaw/pitch/roll.

Points are stored last-axis-coordinates: (..., K, 2) or (..., K, 3). Files of
3DDFA hold (2, K) / (3, K); convert at the file boundary with ``swapaxes``.

Every function here computes with numpy when its array arguments are numpy
arrays and with jax.numpy when one is a jax array or a tracer
(:func:`array_module`): inside jitted code nothing changes, while the per-face
bookkeeping on the host (crop boxes, poses and depths of a few faces, the
onnxruntime backend) does not pay JAX's per-operation dispatch.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from dasl_jax.errors import DaslError

CROP_SIZE = 120
CONVENTIONS = ('v1', 'v2')


def array_module(*arrays):
  """``jax.numpy`` if any argument is a jax array (or a tracer), else ``numpy``."""
  import jax
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _check_convention(convention):
  if convention not in CONVENTIONS:
    raise DaslError(f'unknown pixel convention {convention!r}; use v1 (3DDFA v1 '
                    'and 2DASL: (x, size + 1 - y)) or v2 (3DDFA_V2: (x - 1, size - y))')


def transform(pts, fR, t):
  """Weak-perspective transform of object points (before the y-flip).

  Args:
    pts: (..., K, 3) object-space points.
    fR: (..., 3, 3) scaled rotation.
    t: (..., 3) translation.
  Returns:
    (..., K, 3) camera-space points ``fR @ x + t``.
  """
  xp = array_module(pts, fR, t)
  return xp.einsum('...ij,...kj->...ki', fR, pts) + t[..., None, :]


def to_crop_pixels(pts, convention, size=CROP_SIZE):
  """Camera-space points -> crop pixel coordinates (x, y) with the y-flip.

  v1 (3DDFA v1, 2DASL): ``(x, size + 1 - y)``; v2 (3DDFA_V2): ``(x - 1, size - y)``.

  Args:
    pts: (..., K, 2 or 3) camera-space points; only x and y are used.
  Returns:
    (..., K, 2) crop pixels.
  """
  _check_convention(convention)
  xp = array_module(pts)
  x, y = pts[..., 0], pts[..., 1]
  if convention == 'v1':
    return xp.stack([x, size + 1 - y], axis=-1)
  return xp.stack([x - 1, size - y], axis=-1)


@functools.lru_cache(maxsize=8)
def pixel_affine_np(convention, size=CROP_SIZE):
  """:func:`to_crop_pixels` on (x, y) as numpy ``(A (2, 2), b (2,))`` float64, for
  per-example pipeline code off device: ``to_crop_pixels(x) = x @ A.T + b``.

  Evaluated from :func:`to_crop_pixels` on three points, so the y-flip has one
  definition.
  """
  pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
  uv = np.asarray(to_crop_pixels(pts, convention, size), np.float64)
  b = uv[0]
  A = np.stack([uv[1] - b, uv[2] - b], 1)
  A.setflags(write=False)
  b.setflags(write=False)
  return A, b


def from_crop_pixels(uv, convention, size=CROP_SIZE):
  """Inverse of :func:`to_crop_pixels` on x, y: (..., K, 2) -> (..., K, 2)."""
  _check_convention(convention)
  xp = array_module(uv)
  u, v = uv[..., 0], uv[..., 1]
  if convention == 'v1':
    return xp.stack([u, size + 1 - v], axis=-1)
  return xp.stack([u + 1, size - v], axis=-1)


def project(pts, fR, t, convention, size=CROP_SIZE):
  """Object points -> crop pixels: transform, keep x and y, flip y.

  Args:
    pts: (..., K, 3); fR: (..., 3, 3); t: (..., 3).
  Returns:
    (..., K, 2) crop pixel coordinates.
  """
  return to_crop_pixels(transform(pts, fR, t), convention, size)


def crop_to_image(uv, roi_box, size=CROP_SIZE):
  """Crop pixels -> original-image pixels through the crop box.

  ``x_img = x * (ex - sx) / size + sx`` (same for y).

  Args:
    uv: (..., K, 2) crop pixels.
    roi_box: (..., 4) ``sx, sy, ex, ey`` in the original image.
  Returns:
    (..., K, 2) image pixels.
  """
  xp = array_module(uv, roi_box)
  roi_box = xp.asarray(roi_box, xp.result_type(uv, xp.float32))
  start = roi_box[..., None, 0:2]
  scale = (roi_box[..., None, 2:4] - start) / size
  return uv * scale + start


def crop_to_image_3d(pts, roi_box, size=CROP_SIZE):
  """Crop pixels with depth -> image pixels with depth in image-pixel units.

  x, y as :func:`crop_to_image`; z times the mean of the x and y crop->image
  scales (3DDFA_V2's ``similar_transform``). z is not shifted, so several
  faces of one image keep one depth scale (shift per face where a protocol
  asks, e.g. ``protocols.nme_3d``).

  Args:
    pts: (..., K, 3) crop pixels (x, y) and camera-space depth z.
    roi_box: (..., 4) ``sx, sy, ex, ey``.
  Returns:
    (..., K, 3).
  """
  xp = array_module(pts, roi_box)
  roi_box = xp.asarray(roi_box, xp.result_type(pts, xp.float32))
  s = ((roi_box[..., 2] - roi_box[..., 0]) + (roi_box[..., 3] - roi_box[..., 1])) / (2 * size)
  xy = crop_to_image(pts[..., :2], roi_box, size)
  return xp.concatenate([xy, pts[..., 2:3] * s[..., None, None]], axis=-1)


def image_to_crop(xy, roi_box, size=CROP_SIZE):
  """Inverse of :func:`crop_to_image`: (..., K, 2) image -> (..., K, 2) crop."""
  xp = array_module(xy, roi_box)
  roi_box = xp.asarray(roi_box, xp.result_type(xy, xp.float32))
  start = roi_box[..., None, 0:2]
  scale = (roi_box[..., None, 2:4] - start) / size
  return (xy - start) / scale


def scale_rotation(fR):
  """Split a scaled rotation into scale and a proper rotation (3DDFA's P2sRt).

  The scale is the mean norm of the first two rows; the rotation's rows are the
  normalised first two rows and their cross product.

  Args:
    fR: (..., 3, 3).
  Returns:
    s (...,), R (..., 3, 3).
  """
  xp = array_module(fR)
  n1 = xp.linalg.norm(fR[..., 0, :], axis=-1)
  n2 = xp.linalg.norm(fR[..., 1, :], axis=-1)
  r1 = fR[..., 0, :] / n1[..., None]
  r2 = fR[..., 1, :] / n2[..., None]
  r3 = xp.cross(r1, r2)
  return (n1 + n2) / 2, xp.stack([r1, r2, r3], axis=-2)


def rotation_to_angles(R):
  """Rotation -> (yaw, pitch, roll) in degrees, 3DDFA's convention.

  ``yaw = asin(R[2, 0])``, ``pitch = atan2(R[2, 1], R[2, 2])``,
  ``roll = atan2(R[1, 0], R[0, 0])`` (the cos(yaw) factors cancel), with the
  gimbal cases ``|R[2, 0]| > 0.998`` handled as 3DDFA does (roll = 0).

  Args:
    R: (..., 3, 3) rotation.
  Returns:
    (..., 3) degrees: yaw, pitch, roll.
  """
  xp = array_module(R)
  r20 = R[..., 2, 0]
  yaw = xp.arcsin(xp.clip(r20, -1.0, 1.0))
  pitch = xp.arctan2(R[..., 2, 1], R[..., 2, 2])
  roll = xp.arctan2(R[..., 1, 0], R[..., 0, 0])
  up = r20 > 0.998
  down = r20 < -0.998
  yaw = xp.where(up, xp.pi / 2, xp.where(down, -xp.pi / 2, yaw))
  pitch = xp.where(up, xp.arctan2(-R[..., 0, 1], -R[..., 0, 2]),
                   xp.where(down, xp.arctan2(R[..., 0, 1], R[..., 0, 2]), pitch))
  roll = xp.where(up | down, 0.0, roll)
  return xp.rad2deg(xp.stack([yaw, pitch, roll], axis=-1)).astype(R.dtype)


def pose_angles(fR):
  """Scaled rotation (..., 3, 3) -> (..., 3) yaw, pitch, roll in degrees."""
  return rotation_to_angles(scale_rotation(fR)[1])


# AFLW2000-3D's ground-truth angles use another Euler order than 3DDFA's; these
# run on the host in float64 (evaluation only, never inside a loss).


def rotation_from_pose_para(pose_para):
  """AFLW2000-3D / 300W-LP ``Pose_Para[:3]`` -> rotation, 3DDFA's ``angle2matrix``.

  ``Pose_Para`` = [pitch, yaw, roll, ...] radians; ``R = Rx(pitch) Ry(yaw)
  Rz(roll)`` with 3DDFA's (transposed) elementary rotations. Checked here on
  the 100 ``originals/`` files: this R is within a median 4.9 degrees of the
  rotation of 3DDFA_V2's predicted parameters (:func:`scale_rotation`),
  while its transpose or y-flipped variants are 14 to 55 degrees off.

  Args:
    pose_para: (N, >=3) radians.
  Returns:
    (N, 3, 3).
  """
  p = np.asarray(pose_para, np.float64)
  x, y, z = p[:, 0], p[:, 1], p[:, 2]
  c, s = np.cos, np.sin
  one, zero = np.ones_like(x), np.zeros_like(x)
  rx = np.stack([one, zero, zero, zero, c(x), s(x), zero, -s(x), c(x)], -1).reshape(-1, 3, 3)
  ry = np.stack([c(y), zero, -s(y), zero, one, zero, s(y), zero, c(y)], -1).reshape(-1, 3, 3)
  rz = np.stack([c(z), s(z), zero, -s(z), c(z), zero, zero, zero, one], -1).reshape(-1, 3, 3)
  return rx @ ry @ rz


def aflw_pose_angles(R):
  """Rotation -> (yaw, pitch, roll) degrees in the AFLW2000-3D ground truth's convention.

  The inverse of :func:`rotation_from_pose_para`: ``R^T = Rz(roll) Ry(yaw)
  Rx(pitch)`` (standard rotations), so ``yaw = -asin(R[0, 2])``,
  ``pitch = atan2(R[1, 2], R[2, 2])``, ``roll = atan2(R[0, 1], R[0, 0])``.
  Use this (not :func:`pose_angles`, 3DDFA_V2's own Euler order) to compare
  predictions with ``AFLW2000-3D.pose.npy`` and ``Pose_Para``: the two
  decompositions of one rotation differ by up to 50 degrees at large poses.

  Args:
    R: (N, 3, 3) rotation (e.g. ``camera.scale_rotation(fR)[1]``).
  Returns:
    (N, 3) degrees.
  """
  R = np.asarray(R, np.float64)
  yaw = -np.arcsin(np.clip(R[:, 0, 2], -1.0, 1.0))
  pitch = np.arctan2(R[:, 1, 2], R[:, 2, 2])
  roll = np.arctan2(R[:, 0, 1], R[:, 0, 0])
  return np.rad2deg(np.stack([yaw, pitch, roll], -1))


def aflw_pose_angles_from_params(p):
  """(N, 62) de-whitened params -> (N, 3) yaw, pitch, roll in the AFLW GT convention."""
  fR = np.asarray(p, np.float64)[:, :12].reshape(-1, 3, 4)[:, :, :3]
  return aflw_pose_angles(np.asarray(scale_rotation(fR)[1]))
