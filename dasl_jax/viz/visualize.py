"""Pictures of predictions: mesh overlays, landmarks, depth and normal maps.

All drawing of meshes goes through :mod:`dasl_jax.viz.render` (the project's one
rasteriser); this module only places the faces in the image and blends.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.viz import render as R

MESH_GREY = (0.82, 0.82, 0.86)  # RGB: the light grey of the papers' figures

# Overlay lighting: one directional light from the upper left, in front
# (pixel axes: y down, z to the viewer; unit length), a low ambient term and a
# small white highlight, so that the face's relief (nose, eye sockets, cheeks,
# the turning-away sides) reads through the blend. The dataset renderer keeps
# its own softer defaults (``render.render``).
OVERLAY_LIGHT = tuple(np.array([-0.45, -0.55, 0.70]) / np.linalg.norm([-0.45, -0.55, 0.70]))
OVERLAY_SHADING = dict(light=OVERLAY_LIGHT, ambient=0.18, diffuse=0.95, specular=0.18,
                       shininess=12.0)
DEFAULT_ALPHA = 0.75


def face_vertices_image(verts_crop, roi_box, size=camera.CROP_SIZE):
  """Crop-pixel vertices (N, 3) -> image pixels with z in image-pixel units
  (not shifted, so several faces share one depth scale). -> (N, 3) float32."""
  return np.asarray(camera.crop_to_image_3d(np.asarray(verts_crop, np.float64),
                                            np.asarray(roi_box, np.float64), size), np.float32)


def _combine(meshes):
  """[(verts (N, 3), triangles (T, 3))] -> one mesh (offsets the indices)."""
  vs, ts, off = [], [], 0
  for v, t in meshes:
    vs.append(v)
    ts.append(np.asarray(t, np.int64) + off)
    off += len(v)
  return np.concatenate(vs), np.concatenate(ts)


def overlay(image, verts_list: Sequence[np.ndarray], triangles, lms_list=None,
            colors=None, alpha=DEFAULT_ALPHA, landmark_color=(0, 255, 0), landmark_radius=None,
            shading=None):
  """The papers' picture: the shaded mesh blended over the photo, plus landmarks.

  Args:
    image: (H, W, 3) uint8 BGR (not modified).
    verts_list: per face (N, 3) image-pixel vertices with depth (larger nearer),
      from :func:`face_vertices_image`.
    triangles: (T, 3) shared topology (or None: landmarks only).
    lms_list: per face (68, 2) image-pixel landmarks, or None.
    colors: (N, 3) RGB in [0, 1] per vertex, or None for light grey.
    alpha: mesh opacity.
    shading: keyword arguments of :func:`dasl_jax.viz.render.render` (light,
      ambient, diffuse, specular, shininess); default :data:`OVERLAY_SHADING`.
  Returns:
    (H, W, 3) uint8 BGR.
  """
  h, w = image.shape[:2]
  out = np.array(image, np.uint8, copy=True)
  if verts_list and triangles is not None and len(triangles):
    v, t = _combine([(vv, triangles) for vv in verts_list])
    if colors is None:
      col = np.asarray(MESH_GREY, np.float32)
    else:
      col = np.concatenate([np.asarray(colors, np.float32)] * len(verts_list))
    shaded, depth = R.render(v, t, col, h, w, **(OVERLAY_SHADING if shading is None
                                                  else shading))
    mask = np.isfinite(depth)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size:
      # Blend only inside the mesh's bounding box (a full 720p float blend
      # costs more than the rasterisation).
      ys = slice(rows[0], rows[-1] + 1)
      xs = slice(cols[0], cols[-1] + 1)
      import cv2
      blend = cv2.addWeighted(image[ys, xs], 1 - alpha, shaded[ys, xs], alpha, 0.0)
      m = mask[ys, xs]
      out[ys, xs][m] = blend[m]
  for k, lms in enumerate(lms_list or []):
    side = np.ptp(np.asarray(lms), axis=0).max()
    r = landmark_radius or max(1.0, side / 90)
    R.draw_landmarks(out, lms, color=landmark_color, radius=r)
  return out


def depth_map(shape, verts_list, triangles):
  """8-bit depth image of the faces: 255 nearest, 0 farthest face point, 0 background.

  Args:
    shape: (H, W) of the photo; verts_list: per face (N, 3) image pixels.
  Returns:
    (H, W) uint8 and the raw depth (H, W) float32 (-inf where empty).
  """
  h, w = shape[:2]
  if not verts_list:
    return np.zeros((h, w), np.uint8), np.full((h, w), -np.inf, np.float32)
  v, t = _combine([(vv, triangles) for vv in verts_list])
  _, depth = R.rasterize(v, t, v[:, 2:3], h, w)
  on = np.isfinite(depth)
  out = np.zeros((h, w), np.uint8)
  if on.any():
    lo, hi = depth[on].min(), depth[on].max()
    out[on] = np.clip(np.round(20 + 235 * (depth[on] - lo) / max(hi - lo, 1e-6)), 0, 255)
  return out, depth


def normal_map(shape, verts_list, triangles):
  """Camera-facing unit normals as a BGR image: (n + 1) / 2 * 255 with x -> R,
  y -> G, z -> B (the usual normal-map colours); black background.

  Returns:
    (H, W, 3) uint8 BGR.
  """
  h, w = shape[:2]
  out = np.zeros((h, w, 3), np.uint8)
  if not verts_list:
    return out
  v, t = _combine([(vv, triangles) for vv in verts_list])
  n = R.vertex_normals(v, t)
  # Pixel y points down; flip it so "up" normals are green as in camera space.
  rgb = (np.stack([n[:, 0], -n[:, 1], n[:, 2]], 1) + 1) / 2
  img, depth = R.rasterize(v, t, rgb[:, ::-1] * 255, h, w)
  on = np.isfinite(depth)
  out[on] = np.clip(np.round(img[on]), 0, 255).astype(np.uint8)
  return out


def draw_boxes(image, boxes, color=(255, 128, 0)):
  """Rectangles (F, 4+) x1, y1, x2, y2 on a BGR image in place."""
  import cv2
  for b in np.asarray(boxes, np.float64).reshape(len(boxes), -1):
    cv2.rectangle(image, (int(round(b[0])), int(round(b[1]))),
                  (int(round(b[2])), int(round(b[3]))), color, 1, cv2.LINE_AA)
  return image
