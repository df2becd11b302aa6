"""Small datasets in the real file layouts, written by the tests (no real data needed).

* :func:`toy_model`: a 68-landmark MorphableModel with random bases;
* :func:`write_train_aug`: 3DDFA's train_aug_120x120 layout (images, list,
  param_all_norm.pkl, param_whitening.pkl, a detector landmark file);
* :func:`write_wild_folder`: crops of any size plus a CSV landmark file.

Expected values are re-derived independently in numpy here (``lms68_v1``).
"""
import pickle
from pathlib import Path

import cv2
import jax.numpy as jnp
import numpy as np

from dasl_jax.face_model import morphable_model as MM
from dasl_jax.geometry import params as P


def toy_model(seed=0):
  """68 points of a face-sized cloud (+-50 units) with small random bases."""
  rng = np.random.default_rng(seed)
  u = rng.uniform(-50, 50, (68, 3)).astype(np.float32)
  w_shp = rng.normal(0, 1.0, (204, 40)).astype(np.float32)
  w_exp = rng.normal(0, 1.0, (204, 10)).astype(np.float32)
  return MM.MorphableModel(u=jnp.asarray(u.reshape(-1)), w_shp=jnp.asarray(w_shp),
                           w_exp=jnp.asarray(w_exp), keypoints=jnp.arange(68), name='toy')


def toy_stats(seed=0):
  rng = np.random.default_rng(seed + 1)
  return P.ParamStats(rng.normal(0, 0.1, 62).astype(np.float32),
                      rng.uniform(0.5, 2.0, 62).astype(np.float32), 'toy')


def toy_params(n, seed=0):
  """(n, 62) de-whitened params: scale 0.5, yaw within +-30 deg, centred at 60, 60."""
  rng = np.random.default_rng(seed + 2)
  out = np.zeros((n, 62), np.float32)
  for i in range(n):
    a = np.deg2rad(rng.uniform(-30, 30))
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    fR = 0.5 * R
    t = np.array([60 + rng.uniform(-5, 5), 60 + rng.uniform(-5, 5), 0.0])
    out[i, :12] = np.concatenate([fR, t[:, None]], 1).reshape(-1)
    out[i, 12:] = rng.normal(0, 1.0, 50)
  return out


def lms68_v1(model, p):
  """Independent re-derivation: (62,) de-whitened -> (68, 2) crop pixels, v1 (x, 121 - y)."""
  u = np.asarray(model.u, np.float64).reshape(68, 3)
  ws = np.asarray(model.w_shp, np.float64).reshape(68, 3, 40)
  we = np.asarray(model.w_exp, np.float64).reshape(68, 3, 10)
  pose = np.asarray(p[:12], np.float64).reshape(3, 4)
  S = u + ws @ p[12:52] + we @ p[52:62]          # (68, 3)
  cam = S @ pose[:, :3].T + pose[:, 3]
  return np.stack([cam[:, 0], 121.0 - cam[:, 1]], 1)


def face_image(seed, size=120):
  """A smooth random colour image (compresses well, decodes deterministically)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
  return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def write_train_aug(root, n=12, seed=0, landmark_noise=1.0):
  """Write a train_aug_120x120 layout under ``root``; returns a dict of what was written."""
  root = Path(root)
  img_dir = root / 'train_aug_120x120'
  cfg = root / 'train.configs'
  img_dir.mkdir(parents=True, exist_ok=True)
  cfg.mkdir(parents=True, exist_ok=True)
  model, stats = toy_model(seed), toy_stats(seed)
  p = toy_params(n, seed)
  names = [f'face{i:04d}_{seed}.jpg' for i in range(n)]
  for i, name in enumerate(names):
    cv2.imwrite(str(img_dir / name), face_image(seed * 1000 + i))
  (cfg / 'train_aug_120x120.list.train').write_text('\n'.join(names) + '\n')
  pw = ((p - stats.mean) / stats.std).astype(np.float32)
  with open(cfg / 'param_all_norm.pkl', 'wb') as f:
    pickle.dump(pw, f)
  with open(cfg / 'param_whitening.pkl', 'wb') as f:
    pickle.dump({'param_mean': stats.mean, 'param_std': stats.std}, f)
  rng = np.random.default_rng(seed + 3)
  det = np.stack([lms68_v1(model, p[i]) for i in range(n)])
  det = det + rng.normal(0, landmark_noise, det.shape)
  lines = [name + ',' + ','.join(f'{v:.3f}' for v in det[i].reshape(-1))
           for i, name in enumerate(names)]
  (root / 'landmarks.txt').write_text('\n'.join(lines) + '\n')
  return dict(root=root, image_dir=img_dir, list_file=cfg / 'train_aug_120x120.list.train',
              params_file=cfg / 'param_all_norm.pkl', stats_file=cfg / 'param_whitening.pkl',
              landmark_file=root / 'landmarks.txt', names=names, params=p, whitened=pw,
              model=model, stats=stats, detections=det.astype(np.float32))


def write_wild_folder(root, n=6, k=21, size=120, seed=0, header=True):
  """Crops of ``size`` px and a CSV of ``k`` points in their pixels (-1: invisible)."""
  root = Path(root)
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  names = [f'wild{i:03d}.png' for i in range(n)]
  pts = rng.uniform(0.2 * size, 0.8 * size, (n, k, 2)).astype(np.float32)
  pts[:, 1, :] = -1  # point 1 invisible everywhere
  for i, name in enumerate(names):
    cv2.imwrite(str(root / name), face_image(seed * 100 + i, size))
  lines = ['name,' + ','.join(f'x{j},y{j}' for j in range(k))] if header else []
  lines += [name + ',' + ','.join(f'{v:.4f}' for v in pts[i].reshape(-1))
            for i, name in enumerate(names)]
  (root / 'landmarks.csv').write_text('\n'.join(lines) + '\n')
  return dict(root=root, names=names, points=pts, landmark_file=root / 'landmarks.csv')
