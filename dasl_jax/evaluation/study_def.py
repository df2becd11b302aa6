"""The AFLW2000-3D study's analyses of issue 20: the wild labels' definitions, their
noise, a fair start, and which landmarks moved.

Every function reads training and validation data or runs already chosen; none
chooses anything on the test set. :mod:`dasl_jax.evaluation.study` puts them on
the page.
"""
from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from dasl_jax import evaluation
from dasl_jax.evaluation import label_noise
from dasl_jax.face_model import schemes as S

# iBUG-68 regions for the per-landmark breakdown.
REGIONS = (('jaw', range(0, 17)), ('brows', range(17, 27)), ('nose', range(27, 36)),
           ('eyes', range(36, 48)), ('mouth', range(48, 68)))


# ----------------------------------------------------------------------------
# The fitted scheme.


def find_scheme(root) -> Optional[Path]:
  """A run's saved 21-point scheme (every def arm fits the same one: same teacher,
  same training crops), or None."""
  for p in sorted(Path(root).glob('*_def_s*/scheme.json')) + sorted(
      Path(root).glob('levers/*/scheme.json')):
    try:
      if S.load(p).size == 21:
        return p
    except Exception:  # a half-written file is not a scheme
      continue
  return None


def scheme_rows(scheme) -> list:
  """Table rows of a fitted scheme: name, crops, NME before / after (%), offset (% face)."""
  return [{'point': p['name'], 'n': p['n'], 'nme_before': p['nme_before'],
           'nme_after': p['nme_after'], 'rms_after': p.get('rms_after', float('nan')),
           'offset_pct': p['offset_pct']} for p in scheme.fit.get('points', [])]


# ----------------------------------------------------------------------------
# Label noise on the validation crops.


def _teacher(root):
  files = sorted(glob.glob(str(Path(root) / 'cache' / 'teacher_*.npz')))
  if not files:
    return None
  with np.load(files[0]) as z:
    return list(z['names']), z['params'].astype(np.float64)


def label_noise_table(root, scheme, model68, aflw_wild_dir, dlib_file, val_size=1000,
                      val_seed=0, convention='v2') -> Optional[dict]:
  """Three-cornered hat (``evaluation.label_noise``) on the validation crops: AFLW's
  labels, the teacher's points and dlib's, all through ``scheme``.

  Returns:
    {'points': per-point rows, 'yaw': per-|yaw|-bin rows, 'crops': n} or None when the
    teacher cache or the dlib file is missing.
  """
  import jax.numpy as jnp
  from dasl_jax.data import readers as R
  from dasl_jax.data import teacher as T
  from dasl_jax.io.landmark_files import read_landmark_file
  t = _teacher(root)
  if t is None or not Path(dlib_file).exists():
    return None
  names, tp = t
  src = R.AflwWildSource(aflw_wild_dir, skip_bad_rows=True)
  where = {n: i for i, n in enumerate(names)}
  _, val = T.validation_split(src.names, val_size, val_seed)
  dn, dp = read_landmark_file(dlib_file)
  dl = {n: i for i, n in enumerate(dn)}
  rows = [r for r in range(src.n_rows) if src.names[r] in set(val) and src.names[r] in where
          and src.names[r] in dl]
  p = tp[[where[src.names[r]] for r in rows]]
  d68 = dp[[dl[src.names[r]] for r in rows]].astype(np.float64)
  teacher21 = np.asarray(S.points2d_from_params(p, model68, scheme, convention), np.float64)
  fR = jnp.asarray(p[:, :12].reshape(-1, 3, 4)[:, :, :3], jnp.float32)
  dlib21 = (np.einsum('kn,ind->ikd', scheme.combine, d68)
            + np.asarray(S.offsets_2d(fR, scheme.offsets), np.float64))
  labels = src.pts21_crop[rows].astype(np.float64)
  mask = src.vis21[rows] > 0
  from dasl_jax.face_model import morphable_model as mm
  l68 = np.asarray(mm.landmarks2d(model68, jnp.asarray(p, jnp.float32), convention), np.float64)
  size = S.face_size(l68)
  per = label_noise.three_cornered_hat(labels, teacher21, dlib21, mask, size)

  def agree(x, y):  # mean visible-point distance, % of the face size
    d = np.linalg.norm(x - y, axis=-1) / size[:, None] * 100.0
    return float(d[mask].mean())
  yaw = label_noise.by_yaw(labels, teacher21, dlib21, mask, size, src.yaws[rows])
  return {'crops': len(rows), 'of_validation': len(val),
          'agreement': {'dlib_vs_label': agree(dlib21, labels),
                        'teacher_vs_label': agree(teacher21, labels),
                        'dlib_vs_teacher': agree(dlib21, teacher21)},
          'points': [{'point': scheme.point_names[k], 'n': int(per['n'][k]),
                      'label': float(per['a'][k]), 'teacher': float(per['t'][k]),
                      'dlib': float(per['d'][k])} for k in range(scheme.size)],
          'yaw': yaw}


def dlib_validation(found, root, model68, aflw_wild_dir, dlib_file, val_size=1000, val_seed=0,
                    arms=()) -> Optional[dict]:
  """After the fact, never a choice: each chosen checkpoint's 68-point NME (%) against
  dlib's iBUG-68 points on the validation crops dlib labels (mostly near-frontal): a
  second labeller in iBUG's own definitions, independent of the teacher whose
  systematic placements the fitted scheme absorbs.

  Returns:
    {'crops': n, 'rows': {arm: {'mean': x, 'range': r, 'per_seed': {...}}}} or None.
  """
  from dasl_jax.data import readers as R
  from dasl_jax.data import teacher as T
  from dasl_jax.inference.predictor import Predictor
  from dasl_jax.io import checkpoint
  from dasl_jax.io.landmark_files import read_landmark_file
  if not Path(dlib_file).exists():
    return None
  names = R.read_list(Path(aflw_wild_dir) / 'list.txt')
  _, val = T.validation_split(names, val_size, val_seed)
  dn, dp = read_landmark_file(dlib_file)
  dl = {n: i for i, n in enumerate(dn)}
  keep = [n for n in val if n in dl]
  ref = dp[[dl[n] for n in keep]].astype(np.float64)
  crops = T.read_crops(Path(aflw_wild_dir) / 'images', keep)
  out = {}
  for arm in arms:
    per = {}
    for e in found.get(arm, []):
      d = Path(e['dir'])
      step = e['validation'].get('best_step')
      src = d if (d / 'model_config.json').exists() else Path(root) / 'mb05'
      restored = checkpoint.restore(src, step) if step is not None else checkpoint.restore(src)
      tta = 'flip' if arm == 'a_tta' else 'none'
      lms = Predictor(restored, model68, batch_size=64, tta=tta).predict_crops(crops)['lms68']
      per[str(e['seed'])] = float(100 * evaluation.nme(lms, ref).mean())
    if per:
      v = list(per.values())
      out[arm] = {'mean': float(np.mean(v)),
                  'range': float(np.max(v) - np.min(v)) if len(v) > 1 else float('nan'),
                  'per_seed': per}
  return {'crops': len(keep), 'of_validation': len(val), 'rows': out}


# ----------------------------------------------------------------------------
# A fair start: the short diagnostic runs.

# name -> (what it changes, the arm's flagfile, extra flags). Every one runs seed 0 on the
# schedule of a 400-step run (decay_to scaled), validated every 5 steps.
DIAGNOSTICS = {
    'base': ('(e) as in issue 12 (Adam 2e-5, no warm-up)', 'e_full', []),
    'b_l3d': ('(b): L_3d alone', 'b_l3d', []),
    'ch3': ('(e) without the FLM channel (3-channel start)', 'e_full',
            ['--config.model.in_channels=3']),
    'w005': ('(e), wild weights 0.005 instead of 0.05', 'e_full',
             ['--config.loss.w_2d=0.005', '--config.loss.w_cyc=0.005',
              '--config.loss.w_3d_con=0.005']),
    'lr0': ('(e) with learning rate 1e-12 (the measurement itself)', 'e_full',
            ['--config.optim.lr=1e-12']),
    'sgd': ('(e) with SGD (Nesterov 0.9, lr 1e-4) instead of Adam', 'e_full',
            ['--config.optim.name=sgd', '--config.optim.lr=0.0001',
             '--config.optim.weight_decay=0']),
    'eps': ("(e) with Adam's eps 1e-3 instead of 1e-8", 'e_full',
            ['--config.optim.adam_eps=0.001']),
    'warm50': ('(e) with a 50-step linear warm-up', 'e_full', ['--config.optim.warmup_steps=50']),
    'warm_rob': ('(e), warm-up + pseudo-Huber 2D terms (3 px)', 'e_full',
                 ['--config.optim.warmup_steps=50', '--config.loss.robust_2d=3']),
    'warm_fit': ('(e), warm-up + AFLW\'s fitted definitions', 'e_full',
                 ['--config.optim.warmup_steps=50', '--config.data.wild_scheme=fit']),
}
DIAGNOSTIC_STEPS = 30


def diagnostic_flags(steps=DIAGNOSTIC_STEPS, full_steps=400, decay_to=0.1):
  """The short schedule: the first ``steps`` steps of a ``full_steps`` run."""
  return [f'--config.train.num_steps={steps}',
          f'--config.optim.decay_to={decay_to ** (steps / full_steps):.5f}',
          '--config.train.eval_every=5', '--config.train.log_every=5',
          '--config.train.checkpoint_every=0', '--config.train.keep_checkpoints=1']


def diagnostics_table(root) -> Dict[str, dict]:
  """{name: {step: (val21_nme, val_teacher_nme)}} of the diagnostic runs under
  ``<root>/fairstart`` (any that exist)."""
  from dasl_jax.evaluation.study import read_log
  out = {}
  for name in DIAGNOSTICS:
    d = Path(root) / 'fairstart' / name
    recs = read_log(d)
    curve = {int(r['step']): (float(r['val21_nme']), float(r['val_teacher_nme']))
             for r in recs if 'val21_nme' in r and 'val_teacher_nme' in r}
    gn = [float(r['grad_norm']) for r in recs if 'grad_norm' in r]
    log = Path(root) / 'fairstart' / f'{name}.train.log'
    stopped = None
    if log.exists() and 'non-finite loss' in log.read_text():
      line = [x for x in log.read_text().splitlines() if 'non-finite loss' in x][-1]
      stopped = 'diverged: ' + line.split('non-finite loss', 1)[1].split(';')[0].strip()
    if curve:
      out[name] = {'curve': curve, 'max_grad_norm': max(gn) if gn else float('nan'),
                   'stopped': stopped}
  return out


# ----------------------------------------------------------------------------
# Which landmarks moved (runs already chosen; AFLW2000-3D read once per run).


def per_landmark_error(lms_file, ds, idx, gt='original'):
  """(68,) mean point error over the images, % of each image's GT box size.

  Args:
    lms_file: a run's ``aflw2000_lms.npy``: (M, 2, 68) crop pixels of the images ``idx``.
  """
  crop = np.swapaxes(np.load(lms_file), 1, 2)[..., :2]
  lms = np.asarray(evaluation.crop_to_image_landmarks(crop, ds.roi_boxes[idx]), np.float64)
  ref = (ds.pts68[idx] if gt == 'original' else ds.reannotated[idx])[..., :2].astype(np.float64)
  size = evaluation.bbox_size(ref)
  return (np.linalg.norm(lms - ref, axis=-1) / size[:, None]).mean(axis=0) * 100.0


def landmark_breakdown(found, aflw_dir, start='a_start', arms=()) -> dict:
  """Per landmark and region: the start's error and each arm's change (seed mean),
  on both ground truths."""
  from dasl_jax.evaluation import aflw2000
  ds = aflw2000.load(aflw_dir)
  idx = ds.subset_indices(1998)
  out = {}
  for gt in ('original', 'reannotated'):
    base = per_landmark_error(Path(found[start][0]['dir']) / 'aflw2000_lms.npy', ds, idx, gt)
    res = {'start': base.tolist(), 'arms': {}}
    for arm in arms:
      if arm not in found:
        continue
      errs = [per_landmark_error(Path(e['dir']) / 'aflw2000_lms.npy', ds, idx, gt)
              for e in found[arm] if (Path(e['dir']) / 'aflw2000_lms.npy').exists()]
      if errs:
        res['arms'][arm] = (np.mean(errs, 0) - base).tolist()
    out[gt] = res
  return out


def plot_breakdown(breakdown, labels, path):
  """Bars of each arm's per-landmark change (seed mean) on both ground truths."""
  from dasl_jax.evaluation.study import _plt
  plt = _plt()
  fig, axes = plt.subplots(2, 1, figsize=(12, 6.4), sharex=True)
  for ax, gt in zip(axes, ('original', 'reannotated')):
    arms = list(breakdown[gt]['arms'])
    w = 0.8 / max(len(arms), 1)
    for j, arm in enumerate(arms):
      ax.bar(np.arange(68) + (j - (len(arms) - 1) / 2) * w, breakdown[gt]['arms'][arm], w,
             label=labels.get(arm, arm))
    for name, r in REGIONS[1:]:
      ax.axvline(r.start - 0.5, c='0.7', lw=0.8)
    for name, r in REGIONS:
      ax.text((r.start + r.stop - 1) / 2, 1.0, name, transform=ax.get_xaxis_transform(),
              ha='center', va='bottom', fontsize=8)
    ax.axhline(0, c='k', lw=0.6)
    ax.set_ylabel(f'change vs start (% face)\n{gt} ground truth')
    ax.grid(alpha=0.2, axis='y')
  axes[0].legend(fontsize=7, ncol=3)
  axes[1].set_xlabel('iBUG-68 landmark (0-based); below 0 = closer to the ground truth')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return Path(path)


def region_rows(breakdown) -> list:
  """Per region and ground truth: the start's mean error and each arm's change."""
  rows = []
  for gt in ('original', 'reannotated'):
    b = breakdown[gt]
    for name, r in REGIONS:
      row = {'gt': gt, 'region': name, 'start': float(np.mean(np.asarray(b['start'])[list(r)]))}
      for arm, d in b['arms'].items():
        row[arm] = float(np.mean(np.asarray(d)[list(r)]))
      rows.append(row)
  return rows


def dump(obj, path):
  Path(path).write_text(json.dumps(obj, indent=1, default=float) + '\n')
