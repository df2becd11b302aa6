"""The rasteriser against an independent brute-force reference, z-order, shading, drawing."""
import numpy as np
import pytest

from dasl_jax.viz import render


def reference_raster(verts, tri, values, h, w):
  """Brute force: every pixel centre (x=j, y=i) against every triangle, by solving
  for barycentric coordinates; the largest depth wins."""
  img = np.zeros((h, w, values.shape[1]))
  depth = np.full((h, w), -np.inf)
  for i in range(h):
    for j in range(w):
      for a, b, c in tri:
        m = np.array([[verts[a, 0], verts[b, 0], verts[c, 0]],
                      [verts[a, 1], verts[b, 1], verts[c, 1]],
                      [1.0, 1.0, 1.0]])
        if abs(np.linalg.det(m)) < 1e-12:
          continue
        lam = np.linalg.solve(m, np.array([j, i, 1.0]))
        if np.all(lam >= -1e-9):
          z = lam @ verts[[a, b, c], 2]
          if z > depth[i, j]:
            depth[i, j] = z
            img[i, j] = lam @ values[[a, b, c]]
  return img, depth


def test_rasterize_matches_bruteforce_reference():
  rng = np.random.default_rng(3)
  h, w = 18, 23
  verts = np.concatenate([rng.uniform(-3, [w + 3, h + 3], (15, 2)), rng.uniform(0, 10, (15, 1))], 1)
  tri = np.array([rng.choice(15, 3, replace=False) for _ in range(10)])
  values = rng.uniform(0, 1, (15, 2))
  img, depth = render.rasterize(verts, tri, values, h, w)
  ref_img, ref_depth = reference_raster(verts.astype(np.float32).astype(np.float64), tri, values, h, w)
  covered = np.isfinite(ref_depth)
  assert covered.sum() > 50
  # Random float vertices put no pixel centre exactly on an edge, so coverage agrees.
  np.testing.assert_array_equal(np.isfinite(depth), covered)
  np.testing.assert_allclose(depth[covered], ref_depth[covered], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(img[covered], ref_img[covered], atol=1e-4)
  assert np.all(img[~covered] == 0)


@pytest.mark.parametrize('order', [(0, 1), (1, 0)])
def test_nearer_triangle_wins_regardless_of_order(order):
  # Two triangles covering the same square; the second is nearer (larger z)
  # on the left half and farther on the right half (they cross at x = 5).
  verts = np.array([[0, 0, 1], [10, 0, 1], [0, 10, 1],
                    [0, 0, 2], [10, 0, 0], [0, 10, 2]], np.float32)
  tris = [np.array([0, 1, 2]), np.array([3, 4, 5])]
  tri = np.stack([tris[k] for k in order])
  values = np.array([[1.0]] * 3 + [[2.0]] * 3)
  img, depth = render.rasterize(verts, tri, values, 12, 12)
  assert img[2, 1, 0] == 2.0 and depth[2, 1] > 1   # left: second triangle in front
  assert img[2, 8, 0] == 1.0 and depth[2, 8] == pytest.approx(1.0)  # right: first in front
  assert np.isneginf(depth[11, 11])


def test_render_shading_colour_order_and_background():
  # A flat square facing the camera, lit head-on: albedo * (ambient + diffuse).
  verts = np.array([[2, 2, 5], [17, 2, 5], [2, 17, 5], [17, 17, 5]], np.float32)
  tri = np.array([[0, 1, 2], [1, 3, 2]])
  rgb = np.array([0.8, 0.4, 0.2])
  bg = np.full((20, 20, 3), 7, np.uint8)
  img, depth = render.render(verts, tri, rgb, 20, 20, background=bg, light=(0, 0, 1),
                             ambient=0.25, diffuse=0.5)
  expect_bgr = np.round(rgb[::-1] * 255 * 0.75)
  np.testing.assert_allclose(img[10, 10], expect_bgr, atol=1)
  assert np.all(img[0, 0] == 7) and np.all(bg == 7)       # background kept, input untouched
  assert np.isneginf(depth[0, 0]) and depth[10, 10] == pytest.approx(5)
  # Light from the side of a facing surface leaves only the ambient term.
  img2, _ = render.render(verts, tri, rgb, 20, 20, light=(1, 0, 0), ambient=0.25, diffuse=0.5)
  np.testing.assert_allclose(img2[10, 10], np.round(rgb[::-1] * 255 * 0.25), atol=1)


def test_specular_highlight_and_overlay_contrast():
  # Facing square, light head-on: n . l = n . h = 1, so the highlight adds
  # specular * 255 on top of albedo * (ambient + diffuse).
  verts = np.array([[2, 2, 5], [17, 2, 5], [2, 17, 5], [17, 17, 5]], np.float32)
  tri = np.array([[0, 1, 2], [1, 3, 2]])
  rgb = np.array([0.4, 0.3, 0.2])
  img, _ = render.render(verts, tri, rgb, 20, 20, light=(0, 0, 1), ambient=0.25, diffuse=0.5,
                         specular=0.2, shininess=8)
  np.testing.assert_allclose(img[10, 10], np.round(rgb[::-1] * 255 * 0.75 + 0.2 * 255), atol=1)
  # Light from the side: no diffuse term and no highlight.
  img2, _ = render.render(verts, tri, rgb, 20, 20, light=(1, 0, 0), ambient=0.25, diffuse=0.5,
                          specular=0.2)
  np.testing.assert_allclose(img2[10, 10], np.round(rgb[::-1] * 255 * 0.25), atol=1)
  # A shallow dome (relief 1/4 of its half width, normals mostly near +z, as on
  # a face): to first order a normal tilted by t changes the diffuse term by
  # diffuse * sin(angle(l, z)) * t, 0.65 * 0.57 with the dataset defaults and
  # 0.95 * 0.71 with the overlay's light, plus the highlight: the overlay
  # spreads the grey levels more than twice as wide.
  from dasl_jax.viz import visualize
  from dasl_jax.face_model.morphable_model import grid_triangles
  n = 41
  u, v = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
  z = np.sqrt(np.clip(1.2 - u ** 2 - v ** 2, 0, None))
  verts = np.stack([50 + 40 * u.ravel(), 50 + 40 * v.ravel(), 10 * z.ravel()], 1)
  tri = grid_triangles(n, n)
  grey = visualize.MESH_GREY
  soft, d = render.render(verts, tri, grey, 100, 100)
  hard, _ = render.render(verts, tri, grey, 100, 100, **visualize.OVERLAY_SHADING)
  on = np.isfinite(d)

  def spread(im):
    g = im[on].mean(1)
    return np.percentile(g, 95) - np.percentile(g, 5)
  assert spread(hard) > 2 * spread(soft), (spread(hard), spread(soft))


def test_vertex_normals_face_the_viewer():
  # A tilted plane z = 0.5 x: normal proportional to (-0.5, 0, 1), either winding.
  u, v = np.meshgrid(np.arange(5.0), np.arange(5.0))
  verts = np.stack([u.ravel(), v.ravel(), 0.5 * u.ravel()], 1)
  from dasl_jax.face_model.morphable_model import grid_triangles
  tri = grid_triangles(5, 5)
  for t in (tri, tri[:, ::-1]):
    n = render.vertex_normals(verts, t)
    np.testing.assert_allclose(n, np.tile([-0.5, 0, 1] / np.sqrt(1.25), (25, 1)), atol=1e-5)


def test_draw_landmarks_and_polylines():
  img = np.zeros((40, 40, 3), np.uint8)
  render.draw_landmarks(img, np.array([[10.0, 20.0], [30.0, 5.0]]), (0, 255, 0), 2,
                        mask=np.array([1, 0]))
  assert img[20, 10, 1] > 200 and img[5, 30].max() == 0
  pts = np.stack([np.linspace(2, 37, 68), np.linspace(3, 36, 68)], 1)
  assert render.draw_polylines(np.zeros((40, 40, 3), np.uint8), pts).max() > 0
