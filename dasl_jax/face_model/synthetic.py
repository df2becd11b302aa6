"""A procedural morphable face model with the structure of the BFM as 3DDFA uses it.

Training must run on a machine without the Basel Face Model, so this module
builds, from code alone, a model with the same layout and conventions:

* a head-like mean surface (forehead, brow ridge, eye sockets with eyeballs,
  nose, lips, cheekbones, chin, jaw) of about 5,900 vertices on a grid that is
  finer around the eyes and the mouth;
* 40 shape components (face width, length, depth, nose size, jaw width, ...,
  then smooth random fields) and 10 expression components (mouth opening,
  smile, brow raise, eye closing, ...), each column scaled so that unit
  coefficients give a typical variation; column norms strictly decrease, as
  the variance of PCA components does;
* 68 landmark vertices in iBUG order (jaw 0-16, brows 17-26, nose 27-35, eyes
  36-47, mouth 48-67); the inner lips are distinct rows of vertices with a
  mouth-interior row between them, so they separate when the mouth opens;
* triangles and per-vertex RGB albedo (skin, brows, lips, eye whites, irises).

Units, orientation and scale follow the BFM (y up, z towards the camera, a
face about 150,000 units wide between the jaw landmarks 0 and 16, landmark
depth from about 20,000 at the jaw to about 130,000 at the nose tip), so the
same pose sampling and camera code work for both models. The template numbers
below are generic face proportions chosen by hand, not taken from any file.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.interpolate import PchipInterpolator

from dasl_jax.face_model import morphable_model as mm

K = 1000.0  # the template is written in thousands of units

# Expression components, in the order of the basis columns.
EXPRESSIONS = ('mouth_open', 'smile', 'brow_raise', 'eye_close', 'pucker',
               'frown', 'upper_lip_raise', 'smile_left', 'brow_raise_left', 'jaw_sideways')
# Expressions whose coefficient only makes sense >= 0 (a closed mouth cannot
# close further, a shut eye cannot shut further); their full extent is
# ``build_synthetic_mesh()['exp_full']``.
ONE_SIDED = np.array([True, False, False, True, False, False, False, False, False, False])

SHAPE_NAMES = ('face_width', 'face_length', 'face_depth', 'nose_size', 'jaw_width',
               'chin', 'eye_spacing', 'brow_ridge', 'forehead_slope', 'cheeks',
               'lip_thickness', 'mouth_width', 'nose_length', 'eye_size', 'nose_width')

# Mouth line and the rows around it (see _rows): interior rows at
# Y_MOUTH + {-1, 0, 1} * D_MOUTH, inner lips at +-2 * D_MOUTH.
Y_MOUTH = -39.5 * K
D_MOUTH = 0.7 * K
MOUTH_HALF = 23.5 * K
EYE_C = (31.5 * K, 26.5 * K)   # |x|, y of the eye centres
EYE_HALF = 12.0 * K            # half-width of the eye opening
EYE_UP = 3.8 * K               # upper lid above the centre
EYE_LO = 2.6 * K               # lower lid below the centre


# ----------------------------------------------------------------------------
# Small shape helpers (vectorised over vertices).


def _smooth(t):
  t = np.clip(t, 0.0, 1.0)
  return t * t * (3 - 2 * t)


def _gauss(x, y, cx, cy, sx, sy):
  return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _jaw_curve(n=17):
  """The 17 jaw landmarks (x, y): a squared-off U from ear to ear."""
  a = np.linspace(0, np.pi, n)
  c, s = np.cos(a), np.sin(a)
  x = -74.0 * K * np.sign(c) * np.abs(c) ** 0.8
  y = 18.5 * K - 105.0 * K * s ** 1.25
  return np.stack([x, y], 1)


def _jaw_y(x):
  """Lower outline of the face at x (the jaw curve); above it the surface is kept."""
  jaw = _jaw_curve(201)
  # The curve is x-monotone from left to right.
  return np.where(np.abs(x) <= 74.0 * K, np.interp(x, jaw[:, 0], jaw[:, 1]), 18.5 * K)


def _eye_lids(x, side):
  """Upper and lower lid heights at x for the eye on ``side`` (-1 image left, +1 right)."""
  cx, cy = side * EYE_C[0], EYE_C[1]
  t = np.clip((x - cx) / EYE_HALF, -1, 1)
  # Outer corners sit a little higher than inner ones, as in real eyes.
  tilt = 0.6 * K * (t * side)
  arch = np.clip(1 - t ** 2, 0, 1)
  up = cy + tilt + EYE_UP * arch ** 0.7 + 0.4 * K * (t * -side) * arch
  lo = cy + tilt - EYE_LO * arch ** 0.8
  return up, lo


def _template68():
  """The 68 neutral landmark positions (x, y) in iBUG order, image left = negative x."""
  p = np.zeros((68, 2))
  p[0:17] = _jaw_curve()
  brow_x = np.array([-57.5, -49.0, -39.0, -28.5, -19.5]) * K
  brow_y = np.array([40.5, 46.5, 48.8, 47.8, 45.3]) * K
  p[17:22] = np.stack([brow_x, brow_y], 1)
  p[22:27] = np.stack([-brow_x[::-1], brow_y[::-1]], 1)
  p[27:31] = np.stack([np.zeros(4), np.array([26.0, 14.0, 2.5, -8.0]) * K], 1)
  p[31:36] = np.stack([np.array([-12.0, -6.5, 0, 6.5, 12.0]) * K,
                       np.array([-17.0, -18.5, -19.5, -18.5, -17.0]) * K], 1)
  for side, first in ((-1, 36), (1, 42)):
    cx = side * EYE_C[0]
    # iBUG order goes clockwise from the left corner in the image for both eyes:
    # left corner, two upper points, right corner, two lower points.
    xs = cx + EYE_HALF * np.array([-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3])
    up, lo = _eye_lids(xs, side)
    ys = np.array([(up[0] + lo[0]) / 2, up[1], up[2], (up[3] + lo[3]) / 2, lo[4], lo[5]])
    p[first:first + 6] = np.stack([xs, ys], 1)
  outer_x = np.array([-25.5, -17.0, -6.5, 0, 6.5, 17.0, 25.5, 16.0, 8.0, 0, -8.0, -16.0]) * K
  outer_y = np.array([-40.5, -35.0, -31.5, -32.5, -31.5, -35.0, -40.5,
                      -45.5, -48.0, -48.8, -48.0, -45.5]) * K
  p[48:60] = np.stack([outer_x, outer_y], 1)
  inner_x = np.array([-MOUTH_HALF, -8.0 * K, 0, 8.0 * K, MOUTH_HALF, 8.0 * K, 0, -8.0 * K])
  inner_y = Y_MOUTH + D_MOUTH * np.array([0, 2, 2, 2, 0, -2, -2, -2])
  p[60:68] = np.stack([inner_x, inner_y], 1)
  return p


def _lip_outline(x):
  """Upper and lower outer lip heights at x (from the template's lip landmarks)."""
  t = _template68()
  up = t[48:55]
  lo = np.concatenate([t[54:60], t[48:49]])[::-1]
  return np.interp(x, up[:, 0], up[:, 1]), np.interp(x, lo[:, 0], lo[:, 1])


# ----------------------------------------------------------------------------
# The grid and the mean surface.


def _rows():
  """Row heights, top to bottom: 3k spacing, 1k around the eyes, D_MOUTH at the mouth."""
  mouth = Y_MOUTH + D_MOUTH * np.arange(15, -16, -1)   # -29 .. -50k
  eyes = np.arange(36.0, 16.9, -1.0) * K
  top = np.arange(89.0, 37.0, -3.0) * K
  mid = np.linspace(14.0, -26.5, 14) * K
  low = np.arange(-53.0, -96.0, -3.0) * K
  return np.concatenate([top, eyes, mid, mouth, low])


def _cols():
  """Column angles (radians), left to right: 1.6 deg in the front, 5 deg on the sides."""
  front = np.arange(-42.0, 42.01, 1.6)
  side = np.arange(47.0, 96.0, 5.0)
  return np.deg2rad(np.concatenate([-side[::-1], front, side]))


def _profile(knots_y, knots_v):
  """A smooth (C1, shape-preserving) profile through the knots, in thousands."""
  f = PchipInterpolator(np.asarray(knots_y, float), np.asarray(knots_v, float), extrapolate=True)
  return lambda y: f(np.asarray(y) / K) * K


# Half-width of the head at height y (before the jaw outline cuts it), and the
# depth of the base surface on the mid line (features come on top). Smooth
# profiles: kinks would show as shading bands.
_half_width = _profile([-110, -60, -30, 0, 25, 60, 100], [60, 68, 76, 80, 80, 77, 70])
_front_depth = _profile([-110, -85, -60, -40, -20, 0, 20, 45, 70, 100],
                        [60, 88, 98, 103, 104, 100, 98, 103, 97, 84])


def _base_surface(phi, y):
  """Grid (phi, y) -> base head surface x, z (a rounded, deep cylinder)."""
  a = _half_width(y)
  s, c = np.sin(phi), np.cos(phi)
  x = a * np.sign(s) * np.abs(s) ** 0.9
  # Deep like the BFM's head: the jaw ends (x = +-74k) sit at a depth of about 25k.
  z = _front_depth(y) - 1.5 * a * (1 - np.abs(c) ** 0.9)
  return x, z


def _features(x, y):
  """Relief added to the base depth: nose, eye sockets, brows, lips, cheeks, chin."""
  dz = np.zeros_like(x)
  # Nose: a ridge growing from the bridge to the tip, then wings and columella.
  t = np.clip((y - (-8.0 * K)) / (28.0 * K), 0, 1)        # 0 at the tip, 1 at the bridge
  ridge_h = 30.0 * K * (1 - t) ** 1.3 + 4.0 * K * t
  ridge_w = 4.5 * K + 5.5 * K * (1 - t)
  below = np.clip((-8.0 * K - y) / (11.0 * K), 0, 1)        # under the tip to the lip
  nose = np.where(y >= -8.0 * K, ridge_h, 30.0 * K * (1 - _smooth(below)) ** 1.4)
  nose = nose * np.exp(-0.5 * (x / np.where(y >= -8 * K, ridge_w, 10.0 * K)) ** 2)
  nose *= _smooth((30.0 * K - y) / (6.0 * K))
  wings = 10.0 * K * (_gauss(x, y, -10.5 * K, -14.0 * K, 4.5 * K, 4.5 * K)
                      + _gauss(x, y, 10.5 * K, -14.0 * K, 4.5 * K, 4.5 * K))
  dz += np.maximum(nose, wings)
  # Eye sockets, and the eyeballs inside them.
  for side in (-1, 1):
    cx = side * EYE_C[0]
    dz -= 9.0 * K * _gauss(x, y, cx, EYE_C[1] + 1 * K, 13.0 * K, 9.0 * K)
    dz += 5.0 * K * _gauss(x, y, cx, EYE_C[1], 7.5 * K, 5.0 * K)
  # Brow ridge and forehead.
  dz += 5.0 * K * np.exp(-0.5 * ((y - 44.0 * K) / (5.5 * K)) ** 2) * _smooth((62 * K - np.abs(x)) / (15 * K))
  # Cheekbones and the cheeks' fall-off towards the nose-lip fold.
  for side in (-1, 1):
    dz += 4.0 * K * _gauss(x, y, side * 44.0 * K, 4.0 * K, 12.0 * K, 10.0 * K)
  # Lips and the philtrum groove.
  up, lo = _lip_outline(x)
  dz += 5.0 * K * _gauss(x, y, 0, -35.0 * K, 18.0 * K, 5.0 * K)
  dz += 4.5 * K * _gauss(x, y, 0, -45.0 * K, 16.0 * K, 4.5 * K)
  dz -= 1.2 * K * _gauss(x, y, 0, -25.0 * K, 3.0 * K, 4.0 * K)
  # Groove under the lower lip, then the chin.
  dz -= 3.0 * K * _gauss(x, y, 0, -55.0 * K, 16.0 * K, 4.0 * K)
  dz += 5.0 * K * _gauss(x, y, 0, -70.0 * K, 14.0 * K, 9.0 * K)
  return dz


def _colors(x, y, z, mouth_rows):
  """Per-vertex RGB albedo in [0, 1] from the neutral (x, y) positions."""
  skin = np.array([0.86, 0.67, 0.56])
  col = np.tile(skin, (x.size, 1))
  # Slightly redder cheeks and nose tip, darker sides.
  rosy = np.zeros_like(x)
  for side in (-1, 1):
    rosy += _gauss(x, y, side * 40 * K, -12 * K, 12 * K, 10 * K)
  rosy += 0.7 * _gauss(x, y, 0, -6 * K, 6 * K, 6 * K)
  col = col * (1 - 0.08 * rosy[:, None]) + np.array([0.85, 0.5, 0.45]) * 0.08 * rosy[:, None]
  # Brows: thick dark strokes along the brow landmarks.
  t = _template68()
  for first in (17, 22):
    bx, by = t[first:first + 5, 0], t[first:first + 5, 1]
    inside = (x >= bx[0] - 3 * K) & (x <= bx[-1] + 3 * K)
    yc = np.interp(x, bx, by)
    thick = 3.2 * K
    w = inside * _smooth((thick - np.abs(y - (yc - 0.5 * K))) / (1.5 * K))
    w *= _smooth((np.minimum(x - bx[0], bx[-1] - x) + 3 * K) / (3 * K))
    col = col * (1 - w[:, None]) + np.array([0.28, 0.19, 0.14]) * w[:, None]
  # Eyes: white almond, iris and pupil; lashes darken the lid edge.
  for side in (-1, 1):
    cx, cy = side * EYE_C[0], EYE_C[1]
    up, lo = _eye_lids(x, side)
    inside = (np.abs(x - cx) < EYE_HALF) & (y <= up + 1) & (y >= lo - 1)
    col[inside] = [0.92, 0.9, 0.88]
    r = np.hypot(x - cx, (y - cy - 0.3 * K) * 1.0)
    iris = inside & (r < 5.2 * K)
    col[iris] = [0.42, 0.3, 0.2]
    col[inside & (r < 2.2 * K)] = [0.05, 0.04, 0.04]
    lash = (np.abs(x - cx) < EYE_HALF) & (y > up) & (y < up + 1.3 * K)
    col[lash] = col[lash] * 0.45
  # Lips between the outer outline and the mouth line; the mouth interior rows dark.
  up, lo = _lip_outline(x)
  lip = (np.abs(x) < 26.0 * K) & (y <= up + 0.3 * K) & (y >= lo - 0.3 * K)
  col[lip] = [0.72, 0.38, 0.38]
  col[mouth_rows & (np.abs(x) < MOUTH_HALF - 0.5 * K)] = [0.25, 0.06, 0.07]
  # Nostrils.
  for side in (-1, 1):
    w = _gauss(x, y, side * 6.0 * K, -16.5 * K, 2.5 * K, 1.5 * K)
    col = col * (1 - 0.6 * w[:, None]) + np.array([0.2, 0.1, 0.08]) * 0.6 * w[:, None]
  return np.clip(col, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------
# Expression and shape displacement fields, (N, 3) each, from neutral x, y, z.


def _expression_fields(x, y, z, is_mouth_row):
  """Natural full-extent displacement of each expression: (10, N, 3)."""
  n = x.size
  f = np.zeros((len(EXPRESSIONS), n, 3))
  ax = np.abs(x)
  # 0 mouth open: the lower lip and jaw drop and swing back; interior rows follow
  # halfway and recede into the mouth; away from the mouth the cheek stretches.
  drop = 16.0 * K
  m = _smooth((MOUTH_HALF + 4 * K - ax) / (6.0 * K))
  sharp = np.clip((Y_MOUTH + 2 * D_MOUTH - y) / (4 * D_MOUTH), 0, 1)
  soft = _smooth((Y_MOUTH + 12 * K - y) / (28 * K))
  hinge = np.clip(1 - 0.55 * (ax / (75 * K)) ** 2, 0, 1) * _smooth((y - (-120 * K)) / (40 * K) + 1)
  w = (m * sharp + (1 - m) * soft) * hinge
  f[0, :, 1] = -drop * w
  f[0, :, 2] = -0.35 * drop * w
  f[0, :, 2] -= 6.0 * K * is_mouth_row * m        # mouth interior recedes
  # 1 smile: corners up and out, cheeks lifted, lips stretched.
  for side in (-1, 1):
    g = _gauss(x, y, side * 25 * K, Y_MOUTH, 10 * K, 9 * K)
    f[1, :, 0] += side * 4.0 * K * g
    f[1, :, 1] += 5.0 * K * g
    c = _gauss(x, y, side * 38 * K, -15 * K, 12 * K, 10 * K)
    f[1, :, 1] += 2.5 * K * c
    f[1, :, 2] += 2.5 * K * c
  # 2 brow raise: brows and forehead skin move up, the eyes stay.
  lift = _smooth((y - 32 * K) / (10 * K)) * (1 - _smooth((y - 75 * K) / (20 * K)))
  f[2, :, 1] = 6.0 * K * lift * _smooth((70 * K - ax) / (15 * K))
  # 3 eye close: the opening collapses onto the lower lid; the lid skin follows.
  for side in (-1, 1):
    up, lo = _eye_lids(x, side)
    inx = _smooth((EYE_HALF + 1.5 * K - np.abs(x - side * EYE_C[0])) / (2.5 * K))
    opening = up - lo
    inside = (y >= lo) & (y <= up)
    above = (y > up)
    d = np.where(inside, -(y - lo), np.where(above, -opening * np.exp(-(y - up) / (4.5 * K)), 0))
    f[3, :, 1] += d * inx
    f[3, :, 2] += np.where(inside | above, 1.0 * K, 0) * inx * _smooth(1 - (y - up) / (6 * K))
  # 4 pucker: mouth narrows and pushes forward.
  g = _gauss(x, y, 0, Y_MOUTH, 20 * K, 10 * K)
  f[4, :, 0] = -0.3 * x * g
  f[4, :, 2] = 6.0 * K * g
  # 5 frown: brows down and towards the nose.
  b = _gauss(x, y, 0, 45 * K, 35 * K, 8 * K) * _smooth((y - 33 * K) / (6 * K))
  f[5, :, 1] = -3.5 * K * b
  f[5, :, 0] = -0.12 * x * b
  # 6 upper lip raise (sneer): upper lip and nose wings up.
  g = _gauss(x, y, 0, -30 * K, 16 * K, 7 * K) * (y > Y_MOUTH + 0.5 * D_MOUTH)
  f[6, :, 1] = 3.5 * K * g
  f[6, :, 2] = 1.5 * K * g
  # 7 one-sided smile (the image-left corner), 8 one-sided brow raise.
  g = _gauss(x, y, -25 * K, Y_MOUTH, 10 * K, 9 * K)
  f[7, :, 0] = -4.0 * K * g
  f[7, :, 1] = 5.0 * K * g
  f[8, :, 1] = 6.0 * K * lift * _smooth((x + 70 * K) / (15 * K)) * _smooth(-x / (25 * K) + 0.5)
  # 9 jaw sideways: the lower face shifts in x.
  f[9, :, 0] = 6.0 * K * w
  return f


def _shape_fields(x, y, z, rng, n_fields):
  """Shape variation directions: (n_fields, N, 3), structured first, then random."""
  n = x.size
  out = []
  ax = np.abs(x)
  lower = _smooth((-15 * K - y) / (40 * K))
  nose_zone = _gauss(x, y, 0, -2 * K, 14 * K, 22 * K)
  zeros = np.zeros(n)
  def v(dx=zeros, dy=zeros, dz=zeros):
    out.append(np.stack([dx, dy, dz], 1))
  v(dx=x)                                           # face width
  v(dy=y)                                           # face length
  v(dz=z - 60 * K)                                  # face depth
  v(dz=_features(x, y) * nose_zone)                 # nose size
  v(dx=x * lower)                                   # jaw width
  chin = _gauss(x, y, 0, -75 * K, 25 * K, 15 * K)
  v(dy=-chin * 10 * K, dz=chin * 6 * K)             # chin length / protrusion
  eyes = sum(_gauss(x, y, s * EYE_C[0], EYE_C[1], 14 * K, 10 * K) * s for s in (-1, 1))
  v(dx=eyes * 10 * K)                               # eye spacing
  v(dz=np.exp(-0.5 * ((y - 44 * K) / (6 * K)) ** 2) * 10 * K)   # brow ridge
  v(dz=-_smooth((y - 45 * K) / (50 * K)) * 20 * K)  # forehead slope
  cheeks = sum(_gauss(x, y, s * 45 * K, -20 * K, 15 * K, 18 * K) for s in (-1, 1))
  v(dx=np.sign(x) * cheeks * 8 * K, dz=cheeks * 5 * K)          # cheek fullness
  lips = _gauss(x, y, 0, Y_MOUTH, 20 * K, 8 * K)
  v(dy=(y - Y_MOUTH) * lips, dz=lips * 4 * K)       # lip thickness
  mouth = _gauss(x, y, 0, Y_MOUTH, 25 * K, 10 * K)
  v(dx=x * mouth)                                   # mouth width
  nose_tip = _gauss(x, y, 0, -8 * K, 10 * K, 12 * K)
  v(dy=-nose_tip * 8 * K)                           # nose length
  v(dx=eyes * 0, dy=sum((y - EYE_C[1]) * _gauss(x, y, s * EYE_C[0], EYE_C[1], 10 * K, 6 * K)
                        for s in (-1, 1)))          # eye size (opening height)
  v(dx=x * nose_zone)                               # nose width
  # Smooth random fields: a few Gaussian bumps each, mirrored so faces stay
  # roughly symmetric, with a small asymmetric part.
  while len(out) < n_fields:
    d = np.zeros((n, 3))
    for _ in range(4):
      cx, cy = rng.uniform(-60, 60) * K, rng.uniform(-85, 80) * K
      sig = rng.uniform(12, 35) * K
      amp = rng.normal(size=3)
      for s in (1, -1):
        g = _gauss(x, y, s * cx, cy, sig, sig)
        asym = 1.0 if s == 1 else rng.uniform(0.7, 1.0)
        d += g[:, None] * amp * np.array([s, 1, 1]) * asym
    out.append(d)
  return np.stack(out[:n_fields])


# ----------------------------------------------------------------------------


def build_synthetic_mesh(seed=0):
  """Everything :func:`build_synthetic_model` builds, as numpy arrays.

  Returns:
    dict with ``mean`` (N, 3), ``w_shp`` (3N, 40), ``w_exp`` (3N, 10),
    ``keypoints`` (68,), ``triangles`` (T, 3), ``colors`` (N, 3) RGB in [0, 1],
    ``exp_full`` (10,) coefficient of each expression's full extent,
    ``shape_names`` (40,) what each shape column varies.
  """
  rng = np.random.default_rng(seed)
  rows, cols = _rows(), _cols()
  yy, pp = np.meshgrid(rows, cols, indexing='ij')
  # Behind the end of the jaw the side of the head is cut by a line rising
  # towards the back. The row under the line is kept and moved onto it, so
  # profile views show a clean edge rather than a staircase of grid cells.
  x_end = 74.0 * K
  phi_end = np.arcsin(np.clip(x_end / _half_width(18.5 * K), 0, 1) ** (1 / 0.9))
  back = (np.abs(pp) - phi_end) / (np.deg2rad(95) - phi_end)
  cut = 18.5 * K + 70 * K * back
  keep = ~((back > 0) & (yy < cut - 16.0 * K))  # the line rises ~12k per side column
  yy = np.where((back > 0) & (yy < cut), cut, yy)
  x, z = _base_surface(pp, yy)
  y = yy.copy()
  # Likewise under the jaw outline: the cells under it are kept and their
  # lower vertices pulled onto the outline and tucked back a little.
  jaw = _jaw_y(x)
  keep &= y >= jaw - 8.0 * K
  outline = np.concatenate([[[-110 * K, 18.5 * K]], _jaw_curve(301), [[110 * K, 18.5 * K]]])
  outline = np.concatenate([np.linspace(outline[i], outline[i + 1], 8, endpoint=False)
                            for i in range(len(outline) - 1)])
  below = np.flatnonzero((y < jaw).reshape(-1) & keep.reshape(-1))
  xb, yb = x.reshape(-1)[below], y.reshape(-1)[below]
  d2 = (xb[:, None] - outline[None, :, 0]) ** 2 + (yb[:, None] - outline[None, :, 1]) ** 2
  near = outline[np.argmin(d2, axis=1)]
  x, y, z = x.reshape(-1), y.reshape(-1), z.reshape(-1)
  z[below] -= np.minimum(0.5 * np.sqrt(d2.min(1)), 3 * K)
  x[below], y[below] = near[:, 0], near[:, 1]
  x, y, z = (a.reshape(keep.shape) for a in (x, y, z))
  tri = mm.grid_triangles(len(rows), len(cols), ~keep.reshape(-1))
  used = np.zeros(keep.size, bool)
  used[tri.reshape(-1)] = True
  remap = -np.ones(keep.size, np.int64)
  remap[used] = np.arange(used.sum())
  tri = remap[tri].astype(np.int32)
  x, y, z = x.reshape(-1)[used], y.reshape(-1)[used], z.reshape(-1)[used]
  z = z + _features(x, y) * _smooth((np.cos(pp.reshape(-1)[used]) - 0.2) / 0.3)
  mouth_rows = (np.abs(y - Y_MOUTH) <= D_MOUTH * 1.01)
  mean = np.stack([x, y, z], 1)

  # Landmarks: the nearest front-facing vertex to each template point.
  tmpl = _template68()
  front = pp.reshape(-1)[used]
  cand = np.flatnonzero(np.abs(front) < np.deg2rad(75))
  d2 = ((mean[cand, None, :2] - tmpl[None]) ** 2).sum(-1)
  keypoints = cand[np.argmin(d2, axis=0)]

  colors = _colors(x, y, z, mouth_rows)
  # Expression: unit direction per component, column norms decreasing.
  n = x.size
  exp_nat = _expression_fields(x, y, z, mouth_rows.astype(np.float64))
  exp_rms = 2600.0 * 0.85 ** np.arange(len(EXPRESSIONS))
  w_exp = np.zeros((3 * n, len(EXPRESSIONS)))
  nat_rms = np.sqrt((exp_nat ** 2).sum((1, 2)) / n)
  exp_full = np.zeros(len(EXPRESSIONS))
  for k in range(len(EXPRESSIONS)):
    w_exp[:, k] = exp_nat[k].reshape(-1) / nat_rms[k] * exp_rms[k]
    # The natural extent in units of this column.
    exp_full[k] = nat_rms[k] / exp_rms[k]
  # Shape: each direction scaled to a peak displacement (a unit coefficient is
  # one standard deviation of that trait), then ordered by column norm so the
  # variance decreases with the index, as in a PCA basis.
  shp = _shape_fields(x, y, z, rng, 40)
  peak = np.concatenate([6500.0 * 0.95 ** np.arange(len(SHAPE_NAMES)),
                         3500.0 * 0.96 ** np.arange(40 - len(SHAPE_NAMES))])
  names = list(SHAPE_NAMES) + [f'random_{j}' for j in range(40 - len(SHAPE_NAMES))]
  cols = []
  for k in range(40):
    d = shp[k] - shp[k].mean(0) * (k >= len(SHAPE_NAMES))  # random fields: no net shift
    cols.append(d.reshape(-1) / np.sqrt((d ** 2).sum(1)).max() * peak[k])
  order = np.argsort([-np.linalg.norm(c) for c in cols], kind='stable')
  w_shp = np.stack([cols[k] for k in order], 1)
  shape_names = tuple(names[k] for k in order)
  return dict(mean=mean.astype(np.float32), w_shp=w_shp.astype(np.float32),
              w_exp=w_exp.astype(np.float32), keypoints=keypoints.astype(np.int64),
              triangles=tri, colors=colors, exp_full=exp_full.astype(np.float32),
              shape_names=shape_names)


def build_synthetic_model(seed=0) -> mm.MorphableModel:
  """The procedural morphable model (deterministic in ``seed``; about 5,900 vertices).

  ``seed`` only changes the smooth random shape fields (and so the order of
  the shape columns); the mean face, landmarks, colours and the expression
  basis are fixed.
  """
  d = build_synthetic_mesh(seed)
  return mm.MorphableModel(
      u=jnp.asarray(d['mean'].reshape(-1)), w_shp=jnp.asarray(d['w_shp']),
      w_exp=jnp.asarray(d['w_exp']), keypoints=jnp.asarray(d['keypoints'], jnp.int32),
      triangles=d['triangles'], colors=d['colors'], name=f'synthetic(seed={seed})')
