"""Draw a grid of synthetic training examples with their landmarks.

  python -m experiments.render_samples --out grid.png [--bfm DIR] [--kind 3d|wild|heldout] [--n 16]

Ground-truth 68 landmarks are green, the noisy detector-like 18 points red.
With ``--bfm ../shared/assets/bfm`` the real BFM (Model_PAF.pkl grid) is
rendered instead of the procedural model (300W-LP-like examples).
"""
from __future__ import annotations


import cv2
import numpy as np
from absl import app, flags


from dasl_jax import cli
from dasl_jax.geometry import camera
from dasl_jax.viz import render
from dasl_jax.data import synthetic
from dasl_jax.errors import DaslError

flags.DEFINE_string('out', 'grid.png', 'output PNG')
cli.define_flags('bfm', bfm='BFM folder (Model_PAF.pkl, keypoints68/, ...); unset: the '
                 'synthetic model')
flags.DEFINE_enum('kind', '3d', list(synthetic.KINDS), 'which source')
flags.DEFINE_integer('n', 16, 'number of examples')
flags.DEFINE_integer('seed', 0, 'dataset seed')
flags.DEFINE_integer('start', 0, 'first example index')
flags.DEFINE_integer('scale', 2, 'upscaling of each tile')
flags.DEFINE_bool('landmarks', True, 'draw the landmarks')


def grid_image(source, indices, scale=2, draw=True):
  """Tiles of ``source[i]`` with landmarks: -> uint8 BGR image."""
  tiles = []
  for i in indices:
    ex = source[i]
    img = cv2.resize(ex['image'], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if draw:
      # Labels -> 0-based pixels (v2), whose pixel (row i, column j) is centred
      # on x = j, y = i; a scaled tile puts that centre at scale * j + (scale - 1) / 2.
      off = (scale - 1) / 2
      for key, colour in (('lms68', (0, 255, 0)), ('points18', (0, 0, 255))):
        px = np.asarray(camera.to_crop_pixels(
            camera.from_crop_pixels(ex[key], source.convention), 'v2'))
        render.draw_landmarks(img, px * scale + off, colour, 1)
    tiles.append(img)
  cols = int(np.ceil(np.sqrt(len(tiles))))
  rows = int(np.ceil(len(tiles) / cols))
  h, w = tiles[0].shape[:2]
  out = np.zeros((rows * h, cols * w, 3), np.uint8)
  for k, t in enumerate(tiles):
    r, c = divmod(k, cols)
    out[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
  return out


def _main(argv):
  del argv
  F = flags.FLAGS
  n = F.start + F.n
  sizes = (n, n, n)
  if F.bfm:
    parts = synthetic.synthetic_bundle_parts('bfm', sizes, F.seed, bfm_dir=F.bfm)
  else:
    parts = synthetic.synthetic_bundle_parts('synthetic', sizes, F.seed, n_stats=1000)
  img = grid_image(parts[F.kind], range(F.start, n), F.scale, F.landmarks)
  if not cv2.imwrite(F.out, img):
    raise DaslError(f'--out {F.out}: cannot write the image there')
  print(f'wrote {F.out} ({F.n} {F.kind} examples, model {parts["model"].name})')


main = cli.command(_main)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
