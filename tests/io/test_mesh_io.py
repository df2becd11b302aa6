"""Mesh files: .obj / .ply read back with independent parsers; image-space vertices."""
import numpy as np
import pytest

from dasl_jax import inference
from dasl_jax.io import meshes as mesh_io
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.errors import DaslError


def _mesh(rng, n=30):
  v = rng.normal(0, 10, (n, 3)).astype(np.float32)
  t = rng.integers(0, n, (40, 3))
  c = rng.uniform(0, 1, (n, 3))
  return v, t, c


def _read_obj(path):
  v, c, f = [], [], []
  for line in open(path):
    parts = line.split()
    if parts and parts[0] == 'v':
      v.append([float(x) for x in parts[1:4]])
      c.append([float(x) for x in parts[4:7]])
    elif parts and parts[0] == 'f':
      f.append([int(x) - 1 for x in parts[1:4]])
  return np.array(v), np.array(c), np.array(f)


def _read_ply(path):
  data = open(path, 'rb').read()
  head, body = data.split(b'end_header\n', 1)
  lines = head.decode().splitlines()
  assert lines[1] == 'format binary_little_endian 1.0'
  nv = int([l for l in lines if l.startswith('element vertex')][0].split()[-1])
  nf = int([l for l in lines if l.startswith('element face')][0].split()[-1])
  vt = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('r', 'u1'), ('g', 'u1'), ('b', 'u1')])
  verts = np.frombuffer(body[:nv * vt.itemsize], vt)
  ft = np.dtype([('n', 'u1'), ('a', '<i4'), ('b', '<i4'), ('c', '<i4')])
  faces = np.frombuffer(body[nv * vt.itemsize:], ft)
  assert len(faces) == nf and np.all(faces['n'] == 3)
  return (np.stack([verts['x'], verts['y'], verts['z']], 1),
          np.stack([verts['r'], verts['g'], verts['b']], 1),
          np.stack([faces['a'], faces['b'], faces['c']], 1))


def test_obj_and_ply_round_trip(tmp_path, rng):
  v, t, c = _mesh(rng)
  obj, ply = mesh_io.write_mesh(tmp_path / 'm', v, t, c)
  ov, oc, of = _read_obj(obj)
  np.testing.assert_allclose(ov, v, atol=1e-4)
  np.testing.assert_allclose(oc, np.round(c * 255) / 255, atol=1e-4)
  np.testing.assert_array_equal(of, t)
  pv, pc, pf = _read_ply(ply)
  np.testing.assert_array_equal(pv, v)
  np.testing.assert_array_equal(pc, np.round(c * 255))
  np.testing.assert_array_equal(pf, t)


def test_mesh_errors(tmp_path, rng):
  v, t, c = _mesh(rng)
  with pytest.raises(DaslError, match='indices'):
    mesh_io.write_obj(tmp_path / 'x.obj', v, t + 100)
  with pytest.raises(DaslError, match='colours'):
    mesh_io.write_ply(tmp_path / 'x.ply', v, t, c[:3])


def test_face_toward_makes_normals_face_plus_z():
  v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
  t = np.array([[0, 1, 2], [1, 2, 3]])  # second one is clockwise seen from +z
  out = mesh_io.face_toward(v, t)
  n = np.cross(v[out[:, 1]] - v[out[:, 0]], v[out[:, 2]] - v[out[:, 0]])
  assert np.all(n[:, 2] > 0)
  assert sorted(map(sorted, out.tolist())) == sorted(map(sorted, t.tolist()))


def test_to_image_space_is_3ddfa_v2_similar_transform(rng):
  # 3DDFA_V2 (tddfa_util.similar_transform) on camera-space vertices (3, N).
  def similar_transform(pts3d, roi_box, size):
    pts3d = pts3d.copy()
    pts3d[0, :] -= 1
    pts3d[2, :] -= 1
    pts3d[1, :] = size - pts3d[1, :]
    sx, sy, ex, ey = roi_box
    scale_x = (ex - sx) / size
    scale_y = (ey - sy) / size
    pts3d[0, :] = pts3d[0, :] * scale_x + sx
    pts3d[1, :] = pts3d[1, :] * scale_y + sy
    s = (scale_x + scale_y) / 2
    pts3d[2, :] *= s
    pts3d[2, :] -= np.min(pts3d[2, :])
    return pts3d

  n = 50
  model = mm.MorphableModel(u=rng.normal(0, 1e4, 3 * n).astype(np.float32),
                            w_shp=rng.normal(0, 1e3, (3 * n, 40)).astype(np.float32),
                            w_exp=rng.normal(0, 1e3, (3 * n, 10)).astype(np.float32),
                            keypoints=np.arange(n)[:1].repeat(68))
  p = np.zeros(62, np.float32)
  p[:12] = [5e-4, 1e-5, 0, 60, 0, 5e-4, 1e-5, 60, 1e-5, 0, 5e-4, 0]
  p[12:] = rng.normal(0, 1, 50)
  cam = np.asarray(mm.vertices(model, p), np.float64)  # (N, 3) before the y-flip
  roi = (100.3, 50.7, 300.9, 251.2)
  want = similar_transform(cam.T, roi, 120).T
  crop = inference.dense_vertices(model, p[None], 'v2')[0]
  np.testing.assert_allclose(inference.to_image_space(crop, roi), want, rtol=1e-5, atol=1e-3)


def _cap():
  """A 3x3 grid in image pixels (y down) bulging toward the viewer (z larger
  nearer), wound consistently: every normal has z > 0 computed in image axes."""
  xs, ys = np.meshgrid([10.0, 20.0, 30.0], [40.0, 50.0, 60.0])
  z = np.array([[0, 1, 0], [1, 5, 1], [0, 1, 0]], float)
  v = np.stack([xs.ravel(), ys.ravel(), z.ravel()], 1)
  t = []
  for r in range(2):
    for c in range(2):
      a, b, d, e = 3 * r + c, 3 * r + c + 1, 3 * r + c + 3, 3 * r + c + 4
      t += [[a, b, d], [b, e, d]]
  return v, np.array(t)


def _normals_z(v, t):
  return np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])[:, 2]


def test_mesh_axes_3ddfa_flips_y_and_keeps_the_front_to_the_viewer(tmp_path):
  v, t = _cap()
  assert np.all(_normals_z(v, t) > 0)
  h = 100
  fv, ft = mesh_io.to_axes(v, t, h, '3ddfa')
  mesh_io.write_mesh(tmp_path / 'm', fv, ft, np.full((9, 3), 0.5))
  ov, _, of = _read_obj(tmp_path / 'm.obj')
  pv, _, pf = _read_ply(tmp_path / 'm.ply')
  # 3DDFA_V2 (utils/serialization.py): x, height - y, z; triangles (i3, i2, i1).
  want_v = np.stack([v[:, 0], h - v[:, 1], v[:, 2]], 1)
  np.testing.assert_allclose(ov, want_v, atol=1e-4)
  np.testing.assert_allclose(pv, want_v, atol=1e-4)
  np.testing.assert_array_equal(of, t[:, ::-1])
  np.testing.assert_array_equal(pf, t[:, ::-1])
  assert np.all(_normals_z(ov, of) > 0)  # toward the viewer in the file's frame
  assert ov[np.argmin(v[:, 1]), 1] == ov[:, 1].max()  # the image's top is the file's top
  # Image axes: vertices and this (already +z) winding unchanged.
  iv, it = mesh_io.to_axes(v, t, h, 'image')
  np.testing.assert_array_equal(iv, v)
  np.testing.assert_array_equal(it, t)


def test_mesh_axes_turns_the_mesh_as_a_whole():
  v, t = _cap()
  v[4, 0] = 33  # the centre pulled past the right column: a fold
  back = _normals_z(v, t) < 0
  assert 0 < back.sum() < len(t) / 2
  _, out = mesh_io.to_axes(v, t, 100, 'image')
  np.testing.assert_array_equal(out, t)  # most face +z: none reversed, not even the fold
  _, out = mesh_io.to_axes(v, t, 100, '3ddfa')
  np.testing.assert_array_equal(out, t[:, ::-1])  # all reversed together
  with pytest.raises(DaslError, match="--mesh_axes must be one of 3ddfa, image, got 'up'"):
    mesh_io.to_axes(v, t, 100, 'up')
