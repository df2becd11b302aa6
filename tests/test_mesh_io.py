"""Mesh files: .obj / .ply read back with independent parsers; image-space vertices."""
import numpy as np
import pytest

from dasl_jax import inference, mesh_io
from dasl_jax import morphable_model as mm
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
