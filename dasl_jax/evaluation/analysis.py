"""What ``notebooks/analysis.ipynb`` shows, as functions: evaluate a checkpoint,
plot CED curves and yaw-binned NME against the published numbers, the worst
cases with overlays, and the training curves of a work directory.

The notebook only calls these (so they are tested and reusable from scripts).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import numpy as np

from dasl_jax import evaluation, inference
from dasl_jax.geometry import camera
from dasl_jax.evaluation import published
from dasl_jax.viz import visualize
from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError


@dataclasses.dataclass
class EvalResult:
  """One evaluation: ``dataset`` name, ``summary`` (``evaluation.binned_summary``,
  percent), per image ``nme`` (fraction), ``yaws``, ``crops`` (N, 120, 120, 3),
  ``pred`` / ``gt`` (N, 68, 2) crop pixels, ``params`` (N, 62), ``flm`` how the
  FLM was fed."""
  dataset: str
  summary: dict
  nme: np.ndarray
  yaws: np.ndarray
  crops: np.ndarray
  pred: np.ndarray
  gt: np.ndarray
  params: np.ndarray
  flm: str


def evaluate(predictor: inference.Predictor, kind: str, assets=None, max_images=0,
             flags: Optional[dict] = None) -> EvalResult:
  """Evaluate on AFLW2000-3D (BFM checkpoints, when the assets are there) or on
  the synthetic held-out set (synthetic checkpoints, or no assets).

  AFLW2000-3D: 4-channel models get the FLM from ``detect_testData_1998.txt``
  (the 1,998 images that have it, as 2DASL's benchmark); 3-channel models use
  all 2,000 crops. ``max_images`` > 0 takes an evenly spaced subset.
  """
  from dasl_jax.evaluation import aflw2000
  from dasl_jax.evaluation import protocols
  root = Path(assets) / 'aflw2000-3d' if assets is not None else None
  if kind == 'bfm' and root is not None and (root / aflw2000.LIST).exists():
    ds = aflw2000.load(root)
    _, idx = protocols.aflw2000_indices(ds, None, predictor.in_channels, 'detector')
    if max_images:
      idx = idx[np.linspace(0, len(idx) - 1, min(max_images, len(idx))).astype(int)]
    pred = protocols.predict_aflw2000(predictor, ds, idx, 'detector', progress=False)
    per = evaluation.nme(pred.lms68, ds.pts68[idx])
    summary = evaluation.binned_summary(per, ds.yaws[idx])
    roi = ds.roi_boxes[idx]
    gt = np.asarray(camera.image_to_crop(ds.pts68[idx].astype(np.float32), roi))
    lms = np.asarray(camera.image_to_crop(pred.lms68.astype(np.float32), roi))
    return EvalResult(f'AFLW2000-3D ({len(idx)} images)', summary, per, ds.yaws[idx],
                      ds.load_crops(idx), lms, gt, pred.params, pred.flm or 'none')
  if kind == 'bfm':
    raise DaslError('a BFM-trained checkpoint is evaluated on AFLW2000-3D, but '
                    f'{root} is missing; set DASL_ASSETS')
  from dasl_jax.data import synthetic as SYN
  from dasl_jax.data.pipeline import stack_examples
  data = (flags or {}).get('data', {})
  n = max_images or int(data.get('synthetic_size_heldout', 256) or 256)
  parts = SYN.synthetic_bundle_parts('synthetic', sizes=(1, 1, n),
                                     seed=int(data.get('synthetic_seed', 0)),
                                     convention=predictor.convention)
  held = stack_examples(parts['heldout'], n)
  pts = held['points18'] if predictor.in_channels == 4 else None
  out = predictor.predict_crops(held['image'], points18=pts, mask18=held.get('mask18'))
  gt = np.asarray(held['lms68'], np.float32)
  per = evaluation.nme(out['lms68'], gt)
  p_true = parts['param_stats'].dewhiten(np.asarray(held['params'], np.float32))
  yaws = np.asarray(camera.pose_angles(P.split(p_true)[0]))[:, 0]
  flm = 'detector-like points18 of the held-out set' if pts is not None else 'none'
  return EvalResult(f'synthetic held-out ({len(gt)} faces)', evaluation.binned_summary(per, yaws),
                    per, yaws, held['image'], out['lms68'], gt, out['params'], flm)


def plot_ced(res: EvalResult, ax=None, max_nme=10.0):
  """Cumulative error distribution per yaw bin and overall, with the published
  mean-of-bins NMEs as reference lines."""
  import matplotlib.pyplot as plt
  ax = ax or plt.gca()
  bins = evaluation.yaw_bins(res.yaws)
  for k, name in enumerate(published.YAW_BINS):
    if (bins == k).any():
      x, y, _ = evaluation.ced_curve(res.nme[bins == k] * 100, max_nme)
      ax.plot(x, y, label=f'yaw {name} (n={int((bins == k).sum())})')
  x, y, _ = evaluation.ced_curve(res.nme * 100, max_nme)
  ax.plot(x, y, 'k', lw=2, label=f'all: mean of bins {res.summary["mean_of_bins"]:.2f}')
  for (name, v), c in zip(published.AFLW2000_NME.items(), ('C4', 'C5', 'C6', 'C7', 'C8')):
    ax.axvline(v[3], color=c, ls=':', lw=1, label=f'{name}: {v[3]:.2f}')
  ax.set_xlabel('NME (%)')
  ax.set_ylabel('fraction of images')
  ax.set_title(f'CED, {res.dataset}')
  ax.set_xlim(0, max_nme)
  ax.set_ylim(0, 1)
  ax.legend(fontsize=7, loc='lower right')
  return ax


def plot_yaw_bins(res: EvalResult, ax=None, label='this checkpoint'):
  """Grouped bars: NME per yaw bin and mean of bins, ours against published."""
  import matplotlib.pyplot as plt
  ax = ax or plt.gca()
  rows = dict(published.AFLW2000_NME)
  rows[label] = tuple(res.summary['bins']) + (res.summary['mean_of_bins'],)
  names = list(published.YAW_BINS) + ['mean']
  width = 0.8 / len(rows)
  for k, (name, vals) in enumerate(rows.items()):
    ax.bar(np.arange(4) + k * width, vals, width, label=name,
           color='k' if name == label else None)
  ax.set_xticks(np.arange(4) + 0.4 - width / 2)
  ax.set_xticklabels(names)
  ax.set_ylabel('NME (%)')
  ax.set_title(f'NME by |yaw|, {res.dataset} vs published (AFLW2000-3D)')
  ax.legend(fontsize=7)
  return ax


def worst_cases(res: EvalResult, dense, convention, k=6, scale=3):
  """The ``k`` worst images: (list of BGR pictures, their indices).

  Each picture is the crop enlarged ``scale`` times with the predicted mesh and
  landmarks (green) and the ground truth (red).
  """
  import cv2
  from dasl_jax.viz import render as R
  order = np.argsort(-res.nme)[:k]
  pics = []
  tri = dense.triangles if dense is not None else None
  verts = (inference.dense_vertices(dense, res.params[order], convention)
           if tri is not None else [None] * len(order))
  for i, v in zip(order, verts):
    img = cv2.resize(res.crops[i], None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    vv = [np.asarray(v) * np.array([scale, scale, scale], np.float32)] if v is not None else []
    pic = visualize.overlay(img, vv, tri, [res.pred[i] * scale], alpha=0.5)
    R.draw_landmarks(pic, res.gt[i] * scale, color=(0, 0, 255), radius=1.5)
    pics.append(pic)
  return pics, order


def read_log(workdir):
  """``WORKDIR/log.jsonl`` -> {metric: (steps, values)} for numeric metrics (not
  ``steps_averaged``, how many steps a training record's means cover)."""
  path = Path(workdir) / 'log.jsonl'
  series = {}
  if not path.exists():
    return series
  for line in path.read_text().splitlines():
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      continue  # a line cut by a crash
    step = rec.get('step')
    if step is None:
      continue
    for key, v in rec.items():
      if key not in ('step', 'steps_averaged') and isinstance(v, (int, float)) \
          and not isinstance(v, bool):
        series.setdefault(key, ([], []))
        series[key][0].append(step)
        series[key][1].append(v)
  return series


def plot_training(series, keys=None, ncols=3):
  """One small plot per metric of :func:`read_log` (log scale for losses)."""
  import matplotlib.pyplot as plt
  keys = [k for k in (keys or sorted(series)) if k in series]
  if not keys:
    return None
  nrows = (len(keys) + ncols - 1) // ncols
  fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 2.6 * nrows), squeeze=False)
  for ax, key in zip(axes.ravel(), keys):
    steps, vals = series[key]
    ax.plot(steps, vals, '.-')
    ax.set_title(key, fontsize=9)
    ax.set_xlabel('step', fontsize=8)
    if 'loss' in key and all(v > 0 for v in vals):
      ax.set_yscale('log')
  for ax in axes.ravel()[len(keys):]:
    ax.axis('off')
  fig.tight_layout()
  return fig
