"""Write synthetic faces in 3DDFA's 300W-LP training layout (``train_aug_120x120``).

So that ``--config.data.source_3d=300wlp`` (and the paper's flagfile,
``experiments/configs/2dasl_300wlp.flags``) can run end to end without the real
636,252 crops. The layout is exactly what ``data.pipeline._source_300wlp`` and
``readers.TrainAugSource`` read::

  ROOT/train_aug_120x120/<name>.jpg                    120x120 crops (BGR JPEG)
  ROOT/train.configs/train_aug_120x120.list.train      one name a line
  ROOT/train.configs/param_all_norm.pkl                pickled float32 (N, 62), whitened
  ROOT/fan_landmarks_train_aug.txt                     FAN-style 68 points: name,x1,y1,...

``--config.data.dir_300wlp=ROOT/train_aug_120x120`` finds the list and labels in
``ROOT/train.configs`` by default; ``--config.data.landmarks_300wlp`` takes the
landmark file.

The faces are the project's synthetic renderer (``data/synthetic.py``) on the
real BFM (``bfm_dir``: ``Model_PAF.pkl``, ``Model_Shape_Sim.mat``,
``keypoints68/``, ``param_whitening.pkl``), because the 300W-LP reader
interprets labels with that BFM's 68-landmark model and whitening: labels made
with the procedural synthetic model would not mean the same faces there. The
"FAN" landmarks are the labels' own 68 landmarks plus seeded Gaussian noise
(``landmark_noise_px``), standing in for a 2D detector; they are not a
detector's output.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np

from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError

IMAGES = 'train_aug_120x120'
CONFIGS = 'train.configs'
LIST = 'train_aug_120x120.list.train'
LABELS = 'param_all_norm.pkl'
LANDMARKS = 'fan_landmarks_train_aug.txt'


def write_300wlp(root, n: int, bfm_dir, seed: int = 0, convention: str = 'v1',
                 landmark_noise_px: float = 1.0, jpeg_quality: int = 95):
  """Write ``n`` synthetic BFM faces in the 300W-LP layout under ``root``.

  Args:
    root: output folder (created; existing files of the layout are overwritten).
    n: number of crops.
    bfm_dir: the BFM folder (see the module docstring).
    seed: dataset seed (example i depends only on ``(seed, i)``).
    convention: crop pixel convention of the labels (2DASL / 3DDFA v1: 'v1').
    landmark_noise_px: standard deviation of the landmark file's noise.
  Returns:
    dict of the written paths: ``dir_300wlp``, ``list``, ``params``, ``landmarks``.
  """
  from dasl_jax.data import synthetic as SYN
  if int(n) < 1:
    raise DaslError(f'write_300wlp: n must be positive, got {n}')
  bfm_dir = Path(bfm_dir)
  for f in ('Model_PAF.pkl', 'Model_Shape_Sim.mat', 'keypoints68', 'param_whitening.pkl'):
    if not (bfm_dir / f).exists():
      raise DaslError(f'{bfm_dir / f}: not found (write_300wlp renders the real BFM; '
                      'set --bfm_dir or DASL_ASSETS)')
  model, label_model = SYN.load_bfm_render_model(bfm_dir)
  stats = P.load_param_stats(bfm_dir / 'param_whitening.pkl')
  src = SYN.SyntheticFaces(model, '3d', int(n), int(seed), stats, convention,
                           prior=SYN.gaussian_prior(stats), label_model=label_model)
  root = Path(root)
  images, configs = root / IMAGES, root / CONFIGS
  images.mkdir(parents=True, exist_ok=True)
  configs.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng([int(seed), 300])
  names, labels, lines = [], [], []
  for i in range(int(n)):
    ex = src[i]
    name = f'SYN_{i:06d}_0.jpg'  # 3DDFA's names: <set>_<id>_<face>_<aug>.jpg
    if not cv2.imwrite(str(images / name), ex['image'],
                       [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]):
      raise DaslError(f'{images / name}: cannot write the image')
    names.append(name)
    labels.append(ex['params'])
    pts = ex['lms68'] + rng.normal(0, landmark_noise_px, ex['lms68'].shape)
    lines.append(name + ',' + ','.join(f'{v:.2f}' for v in pts.reshape(-1)))
  (configs / LIST).write_text('\n'.join(names) + '\n')
  with open(configs / LABELS, 'wb') as f:
    pickle.dump(np.stack(labels).astype(np.float32), f, protocol=2)
  (root / LANDMARKS).write_text('\n'.join(lines) + '\n')
  return {'dir_300wlp': images, 'list': configs / LIST, 'params': configs / LABELS,
          'landmarks': root / LANDMARKS}
