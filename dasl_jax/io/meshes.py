"""Meshes to files: Wavefront .obj and binary .ply, with per-vertex colour.

Vertices are written as given (``inference.to_image_space`` gives image pixels
with z scaled like x and y, as 3DDFA_V2's serialisation does); :func:`to_axes`
first puts them in the file's axes. Triangles are 0-based (T, 3) in memory and
1-based in .obj files.

Mesh axes (``experiments.predict --mesh_axes``):

* ``3ddfa`` (default): x right, y UP (``height - y``), z toward the viewer, as
  3DDFA_V2's ``ser_to_obj`` / ``ser_to_ply`` write them: a right-handed frame,
  so MeshLab and Blender show the face upright, seen from the front;
* ``image``: the image's pixel axes (y down), as the overlays use them; viewers
  show this mirrored and upside down.

Either way the winding is turned, all triangles together, so the face's
normals point to +z (toward the viewer) in the file's frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dasl_jax.errors import DaslError


def _check(vertices, triangles, colors):
  v = np.asarray(vertices, np.float32)
  if v.ndim != 2 or v.shape[1] != 3:
    raise DaslError(f'mesh vertices: expected (N, 3), got {v.shape}')
  t = np.zeros((0, 3), np.int64) if triangles is None else np.asarray(triangles, np.int64)
  if t.ndim != 2 or t.shape[1] != 3:
    raise DaslError(f'mesh triangles: expected (T, 3), got {t.shape}')
  if t.size and (t.min() < 0 or t.max() >= len(v)):
    raise DaslError(f'mesh triangles: indices outside 0..{len(v) - 1}')
  c = None
  if colors is not None:
    c = np.asarray(colors, np.float64)
    if c.shape != v.shape:
      raise DaslError(f'mesh colours: expected {v.shape} RGB in [0, 1], got {c.shape}')
    c = np.clip(np.round(c * 255), 0, 255).astype(np.uint8)
  return v, t, c


def face_toward(vertices, triangles, axis=2, sign=1.0):
  """Flip triangles whose normal points against ``sign * axis``, so the surface
  seen from that side is the front (viewers light and cull by winding).

  The y-flip into image coordinates mirrors the mesh and reverses every
  triangle's winding; this puts a consistent front back. Returns (T, 3).
  """
  v = np.asarray(vertices, np.float64)
  t = np.asarray(triangles, np.int64)
  if not t.size:
    return t
  n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
  flip = sign * n[:, axis] < 0
  out = t.copy()
  out[flip] = out[flip][:, [0, 2, 1]]
  return out


MESH_AXES = ('3ddfa', 'image')


def orient_toward(vertices, triangles, axis=2, sign=1.0):
  """Reverse the winding of ALL triangles when the mesh as a whole faces away
  from ``sign * axis`` (the sum of its area-weighted normals), else keep it.

  Unlike :func:`face_toward` this is one decision for the whole mesh, so a
  consistently wound mesh stays consistent (its few back-facing triangles, at
  the sides of a turned face, keep facing back). Returns (T, 3).
  """
  v = np.asarray(vertices, np.float64)
  t = np.asarray(triangles, np.int64)
  if not t.size:
    return t
  n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
  return t[:, ::-1].copy() if sign * n[:, axis].sum() < 0 else t.copy()


def to_axes(vertices, triangles, height, axes='3ddfa'):
  """Image-pixel vertices (N, 3) (x right, y down, z toward the viewer) and
  triangles -> the same mesh in ``axes`` (see the module doc), front to +z.

  Args:
    vertices: (N, 3); triangles: (T, 3) or None; height: the image height in
      pixels (3DDFA_V2's flip is ``height - y``); axes: '3ddfa' or 'image'.
  Returns:
    ((N, 3) float32, (T, 3) int64 or None).
  """
  if axes not in MESH_AXES:
    raise DaslError(f'--mesh_axes must be one of {", ".join(MESH_AXES)}, got {axes!r}')
  v = np.array(vertices, np.float32)
  if v.ndim != 2 or v.shape[1] != 3:
    raise DaslError(f'mesh vertices: expected (N, 3), got {v.shape}')
  if axes == '3ddfa':
    v[:, 1] = np.float32(height) - v[:, 1]
  return v, (None if triangles is None else orient_toward(v, triangles))


def write_obj(path, vertices, triangles=None, colors=None):
  """Write ``v x y z [r g b]`` lines (colour in [0, 1], as MeshLab reads it)
  and ``f i j k`` lines (1-based).

  Args:
    vertices: (N, 3); triangles: (T, 3) 0-based or None; colors: (N, 3) in [0, 1].
  """
  v, t, c = _check(vertices, triangles, colors)
  lines = []
  if c is None:
    lines += [f'v {x:.4f} {y:.4f} {z:.4f}' for x, y, z in v]
  else:
    cf = c / 255.0
    lines += [f'v {x:.4f} {y:.4f} {z:.4f} {r:.4f} {g:.4f} {b:.4f}'
              for (x, y, z), (r, g, b) in zip(v, cf)]
  lines += [f'f {a + 1} {b + 1} {d + 1}' for a, b, d in t]
  Path(path).write_text('\n'.join(lines) + '\n')


def write_ply(path, vertices, triangles=None, colors=None):
  """Write a binary little-endian PLY: float x, y, z, uchar red, green, blue per
  vertex; ``list uchar int vertex_indices`` per face.

  Args:
    vertices: (N, 3); triangles: (T, 3) 0-based or None; colors: (N, 3) in [0, 1].
  """
  v, t, c = _check(vertices, triangles, colors)
  header = ['ply', 'format binary_little_endian 1.0', f'element vertex {len(v)}',
            'property float x', 'property float y', 'property float z']
  vfields = [('xyz', '<f4', (3,))]
  if c is not None:
    header += ['property uchar red', 'property uchar green', 'property uchar blue']
    vfields.append(('rgb', 'u1', (3,)))
  header += [f'element face {len(t)}', 'property list uchar int vertex_indices', 'end_header']
  vrec = np.zeros(len(v), np.dtype(vfields))
  vrec['xyz'] = v
  if c is not None:
    vrec['rgb'] = c
  frec = np.zeros(len(t), np.dtype([('n', 'u1'), ('idx', '<i4', (3,))]))
  frec['n'] = 3
  frec['idx'] = t
  with open(path, 'wb') as f:
    f.write(('\n'.join(header) + '\n').encode('ascii'))
    f.write(vrec.tobytes())
    f.write(frec.tobytes())


def write_mesh(stem, vertices, triangles=None, colors=None):
  """Write ``stem.obj`` and ``stem.ply``; returns the two paths."""
  stem = Path(stem)
  obj, ply = stem.with_suffix('.obj'), stem.with_suffix('.ply')
  write_obj(obj, vertices, triangles, colors)
  write_ply(ply, vertices, triangles, colors)
  return obj, ply
