"""Z-buffered triangle rasterisation of a mesh, with Lambertian shading.

The one renderer of the project: the synthetic dataset draws its faces with it
and the inference commands draw fitted meshes over photographs.

Coordinates are image pixels with depth, as :func:`dasl_jax.face_model.morphable_model.vertices2d`
gives them: ``(N, 3)`` rows ``x, y, z`` with x to the right, y down and larger z
nearer the camera (the weak-perspective camera keeps one scale for x, y and z,
so normals computed in these coordinates are the camera-space normals with y
mirrored). A pixel ``(row i, column j)`` is sampled at the point ``x = j,
y = i`` (integer coordinates are pixel centres, as in OpenCV's drawing).

The kernels are compiled with numba when it is installed; without it the same
code runs as plain Python (correct, but only usable for small meshes).
"""
from __future__ import annotations

import numpy as np

try:  # numba makes the loops below fast; they stay correct without it.
  import numba
  _njit = numba.njit(cache=True, nogil=True)
  HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
  def _njit(f):
    return f
  HAVE_NUMBA = False

# Light from the upper left and slightly in front, in pixel coordinates
# (y down, so "up" is negative y; z towards the viewer).
DEFAULT_LIGHT = (-0.35, -0.45, 0.82)


@_njit
def _vertex_normals(v, tri):
  """(N, 3) float, (T, 3) int -> (N, 3) unit normals facing the viewer (+z).

  Area-weighted sum of the face normals of each vertex. The sign is chosen per
  vertex so that the normal faces the camera (two-sided lighting): meshes of
  either winding, and the y-mirroring of pixel coordinates, shade the same.
  """
  n = np.zeros((v.shape[0], 3), np.float32)
  for k in range(tri.shape[0]):
    a, b, c = tri[k, 0], tri[k, 1], tri[k, 2]
    e1x = v[b, 0] - v[a, 0]; e1y = v[b, 1] - v[a, 1]; e1z = v[b, 2] - v[a, 2]
    e2x = v[c, 0] - v[a, 0]; e2y = v[c, 1] - v[a, 1]; e2z = v[c, 2] - v[a, 2]
    nx = e1y * e2z - e1z * e2y
    ny = e1z * e2x - e1x * e2z
    nz = e1x * e2y - e1y * e2x
    # Orient each face towards the viewer before summing, so that folds in a
    # mesh with mixed winding do not cancel.
    if nz < 0:
      nx, ny, nz = -nx, -ny, -nz
    for idx in (a, b, c):
      n[idx, 0] += nx; n[idx, 1] += ny; n[idx, 2] += nz
  for i in range(n.shape[0]):
    norm = np.sqrt(n[i, 0] ** 2 + n[i, 1] ** 2 + n[i, 2] ** 2)
    if norm > 0:
      n[i, 0] /= norm; n[i, 1] /= norm; n[i, 2] /= norm
    else:
      n[i, 2] = 1.0
  return n


@_njit
def _shade(colors, normals, light, ambient, diffuse):
  """Per-vertex ``colour * (ambient + diffuse * max(0, n . l))``: (N, 3) -> (N, 3)."""
  out = np.empty(colors.shape, np.float32)
  for i in range(colors.shape[0]):
    d = normals[i, 0] * light[0] + normals[i, 1] * light[1] + normals[i, 2] * light[2]
    f = ambient + diffuse * max(d, 0.0)
    for ch in range(3):
      out[i, ch] = colors[i, ch] * f
  return out


@_njit
def _shade_specular(colors, normals, light, ambient, diffuse, specular, shininess):
  """Blinn-Phong per vertex: ``colour * (ambient + diffuse * max(0, n . l))
  + specular * max(0, n . h) ** shininess`` (white highlight, ``h`` the unit
  half-vector of ``l`` and the viewer's +z; colours 0..255): (N, 3) -> (N, 3)."""
  out = np.empty(colors.shape, np.float32)
  ln = np.sqrt(light[0] ** 2 + light[1] ** 2 + light[2] ** 2)
  hx, hy, hz = light[0] / ln, light[1] / ln, light[2] / ln + 1.0
  hn = np.sqrt(hx * hx + hy * hy + hz * hz)
  hx, hy, hz = hx / hn, hy / hn, hz / hn
  for i in range(colors.shape[0]):
    d = normals[i, 0] * light[0] + normals[i, 1] * light[1] + normals[i, 2] * light[2]
    f = ambient + diffuse * max(d, 0.0)
    sp = normals[i, 0] * hx + normals[i, 1] * hy + normals[i, 2] * hz
    hi = specular * 255.0 * max(sp, 0.0) ** shininess if d > 0 else 0.0
    for ch in range(3):
      out[i, ch] = colors[i, ch] * f + hi
  return out


@_njit
def _rasterize(v, tri, col, image, depth):
  """Z-buffer rasterisation in place.

  Args:
    v: (N, 3) float32 pixel x, y and depth z (larger is nearer).
    tri: (T, 3) int32.
    col: (N, C) float32 per-vertex values (interpolated barycentrically).
    image: (H, W, C) float32, written where a triangle wins the depth test.
    depth: (H, W) float32, initialised to -inf.
  """
  h, w = depth.shape
  nch = col.shape[1]
  for k in range(tri.shape[0]):
    a, b, c = tri[k, 0], tri[k, 1], tri[k, 2]
    ax, ay, az = v[a, 0], v[a, 1], v[a, 2]
    bx, by, bz = v[b, 0], v[b, 1], v[b, 2]
    cx, cy, cz = v[c, 0], v[c, 1], v[c, 2]
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    if area == 0 or not np.isfinite(area):
      continue
    x0 = max(int(np.ceil(min(ax, bx, cx))), 0)
    x1 = min(int(np.floor(max(ax, bx, cx))), w - 1)
    y0 = max(int(np.ceil(min(ay, by, cy))), 0)
    y1 = min(int(np.floor(max(ay, by, cy))), h - 1)
    if x0 > x1 or y0 > y1:
      continue
    inv = 1.0 / area
    eps = -1e-6
    for y in range(y0, y1 + 1):
      for x in range(x0, x1 + 1):
        # Barycentric weights of the pixel centre (x, y).
        wa = ((bx - x) * (cy - y) - (by - y) * (cx - x)) * inv
        wb = ((cx - x) * (ay - y) - (cy - y) * (ax - x)) * inv
        wc = 1.0 - wa - wb
        if wa < eps or wb < eps or wc < eps:
          continue
        z = wa * az + wb * bz + wc * cz
        if z > depth[y, x]:
          depth[y, x] = z
          for ch in range(nch):
            image[y, x, ch] = wa * col[a, ch] + wb * col[b, ch] + wc * col[c, ch]


@_njit
def _composite(fg, depth, out):
  """Write clipped uint8 foreground (H, W, 3 float, 0..255) where depth is set."""
  h, w = depth.shape
  for y in range(h):
    for x in range(w):
      if depth[y, x] > -np.inf:
        for ch in range(3):
          val = fg[y, x, ch] + 0.5
          out[y, x, ch] = 0 if val < 0 else (255 if val >= 255 else int(val))


def vertex_normals(verts, triangles):
  """Unit vertex normals facing the viewer: (N, 3), (T, 3) -> (N, 3) float32."""
  return _vertex_normals(np.ascontiguousarray(verts, np.float32),
                         np.ascontiguousarray(triangles, np.int32))


def rasterize(verts, triangles, values, height, width):
  """Raw z-buffer rasterisation of per-vertex values.

  Args:
    verts: (N, 3) pixel x, y and depth z (larger is nearer).
    triangles: (T, 3) vertex indices.
    values: (N, C) per-vertex values, interpolated barycentrically.
    height, width: output size.
  Returns:
    values image (H, W, C) float32 (0 where empty) and depth (H, W) float32
    (-inf where no triangle covers the pixel).
  """
  values = np.ascontiguousarray(values, np.float32)
  image = np.zeros((height, width, values.shape[1]), np.float32)
  depth = np.full((height, width), -np.inf, np.float32)
  _rasterize(np.ascontiguousarray(verts, np.float32),
             np.ascontiguousarray(triangles, np.int32), values, image, depth)
  return image, depth


def render(verts, triangles, colors, height, width, background=None,
           light=DEFAULT_LIGHT, ambient=0.45, diffuse=0.65, normals=None, specular=0.0,
           shininess=16.0):
  """Shade and rasterise a mesh into a BGR image.

  Args:
    verts: (N, 3) pixel x, y and depth z (larger is nearer), e.g.
      ``morphable_model.vertices2d`` (or its crop -> image mapping for photos).
    triangles: (T, 3) vertex indices.
    colors: (N, 3) per-vertex RGB albedo in [0, 1] (``MorphableModel.colors``),
      or one (3,) RGB colour for the whole mesh.
    height, width: output size in pixels.
    background: optional (H, W, 3) uint8 BGR image drawn behind the mesh (not
      modified); black when None.
    light: (3,) light direction in pixel coordinates (x right, y down, z to the
      viewer); its length scales the diffuse term.
    ambient, diffuse: shading ``albedo * (ambient + diffuse * max(0, n . l))``.
    normals: optional (N, 3) vertex normals (computed from the mesh if None).
    specular, shininess: a white Blinn-Phong highlight ``specular * max(0, n . h)
      ** shininess`` added (0: none, the default; overlays use it).
  Returns:
    image (H, W, 3) uint8 BGR and depth (H, W) float32 (-inf where empty).
  """
  verts = np.ascontiguousarray(verts, np.float32)
  tri = np.ascontiguousarray(triangles, np.int32)
  colors = np.asarray(colors, np.float32)
  if colors.ndim == 1:
    colors = np.broadcast_to(colors, (verts.shape[0], 3))
  # RGB albedo -> BGR 0..255 once per vertex rather than once per pixel.
  colors = np.ascontiguousarray(colors[:, ::-1] * 255.0, np.float32)
  if normals is None:
    normals = _vertex_normals(verts, tri)
  light = np.asarray(light, np.float32)
  normals = np.ascontiguousarray(normals, np.float32)
  if specular:
    shaded = _shade_specular(colors, normals, light, np.float32(ambient), np.float32(diffuse),
                             np.float32(specular), np.float32(shininess))
  else:
    shaded = _shade(colors, normals, light, np.float32(ambient), np.float32(diffuse))
  fg = np.empty((height, width, 3), np.float32)
  depth = np.full((height, width), -np.inf, np.float32)
  _rasterize(verts, tri, shaded, fg, depth)
  if background is None:
    out = np.zeros((height, width, 3), np.uint8)
  else:
    if background.shape != (height, width, 3):
      raise ValueError(f'background must be ({height}, {width}, 3), got {background.shape}')
    out = np.array(background, np.uint8, copy=True)
  _composite(fg, depth, out)
  return out, depth


def draw_landmarks(image, points, color=(0, 255, 0), radius=1, mask=None, thickness=-1):
  """Draw points on a BGR image in place (and return it).

  Args:
    image: (H, W, 3) uint8 BGR.
    points: (K, 2) pixel x, y.
    color: BGR tuple.
    radius: circle radius in pixels (sub-pixel positions are drawn with
      OpenCV's fixed-point shift).
    mask: optional (K,) visibility; points with 0 are skipped.
  """
  import cv2
  pts = np.asarray(points, np.float64)
  shift = 4
  for k, (x, y) in enumerate(pts):
    if (mask is not None and mask[k] <= 0) or not np.isfinite(x + y):
      continue
    cv2.circle(image, (int(round(x * 16)), int(round(y * 16))), int(radius * 16),
               color, thickness, cv2.LINE_AA, shift)
  return image


def draw_polylines(image, points68, color=(255, 255, 255), thickness=1):
  """Draw the iBUG-68 contours (jaw, brows, nose, eyes, lips) on a BGR image in place."""
  import cv2
  pts = np.asarray(points68, np.float64)
  groups = [(range(0, 17), False), (range(17, 22), False), (range(22, 27), False),
            (range(27, 31), False), (range(31, 36), False), (range(36, 42), True),
            (range(42, 48), True), (range(48, 60), True), (range(60, 68), True)]
  for idx, closed in groups:
    poly = np.round(pts[list(idx)] * 16).astype(np.int32)
    cv2.polylines(image, [poly], closed, color, thickness, cv2.LINE_AA, 4)
  return image
