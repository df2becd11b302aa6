r"""The AFLW2000-3D ablation of issue 6: runs, evaluations and the results page.

    python -m experiments.ablation_aflw2000 [--seeds 0,1] [--runs b_l3d,c_2d_cyc,...]
        [--root runs/aflw2000] [--page_only]

For each run of ``experiments/configs/aflw2000/<run>.flags`` and each seed it
trains into ``<root>/<run>_s<seed>`` (skipped when that folder already holds
``aflw2000.json``), then evaluates the last checkpoint on the 1,998-image
subset with ``experiments.evaluate`` (original and re-annotated ground truth,
pose MAE). Run (a), the start model, is the converted 3DDFA_V2 MobileNet x0.5
itself; the 4-channel start computes exactly the same thing (its FLM weights
are zero), so the 3-channel checkpoint is evaluated on the same 1,998 images.

Afterwards it writes, from the runs' JSON only:
``experiments/results/aflw2000_ablation.md`` (table, seed spread, times,
commands), ``aflw2000_ablation_ced.png`` and ``aflw2000_ablation.json``, and
the result block in each run's flagfile header.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import app
from absl import flags

from dasl_jax import aflw2000
from dasl_jax import assets
from dasl_jax import evaluation
from dasl_jax import published
from dasl_jax.errors import DaslError

CONFIGS = Path('experiments/configs/aflw2000')
RESULTS = Path('experiments/results')
RUNS = {
    'b_l3d': '(b) L_3d only',
    'c_2d_cyc': '(c) + L_2d_con + L_cyc',
    'd_3d_con': '(d) + L_3d_con',
    'e_full': '(e) + self-critic (full 2DASL)',
}
START = 'a_start'

flags.DEFINE_list('seeds', ['0', '1'], 'Training seeds of every run.')
flags.DEFINE_list('runs', list(RUNS), 'Runs to train (flagfiles under experiments/configs/aflw2000).')
flags.DEFINE_string('root', 'runs/aflw2000', 'Work directories go here.')
flags.DEFINE_string('pretrained', None, "3DDFA_V2's mb05_120x120.pth (default: "
                    '$DASL_ASSETS/pretrained/mb05_120x120.pth); converted once into <root>/mb05.')
flags.DEFINE_bool('page_only', False, 'Do not train or evaluate; write the page from what exists.')
flags.DEFINE_list('extra', [], 'Extra training flags for every run (e.g. '
                  '--extra=--config.train.num_steps=5 for a smoke run).')
flags.DEFINE_string('results_dir', str(RESULTS), 'Where the page, plot and JSON go.')
flags.DEFINE_bool('update_flagfiles', True, 'Write the result block into each flagfile header.')

FLAGS = flags.FLAGS


def _python(*args):
  return [sys.executable, '-m', *args]


def _call(cmd, log):
  """Run a command, its output to ``log``; a failure names the command and the log."""
  with open(log, 'w') as f:
    f.write(' '.join(cmd) + '\n')
    f.flush()
    r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
  if r.returncode:
    tail = Path(log).read_text().strip().splitlines()[-3:]
    raise DaslError(f"{' '.join(cmd[2:4])} failed (exit {r.returncode}); see {log}: "
                    + ' | '.join(tail))


def train_command(run, seed, workdir, root, extra=()):
  return _python('experiments.train', f'--flagfile={CONFIGS / run}.flags',
                 f'--workdir={workdir}', f'--config.train.seed={seed}',
                 f'--config.model.init_checkpoint={root}/mb05',
                 '--config.train.progress=False', *extra)


def eval_command(checkpoint, out_dir, aflw_dir=None):
  cmd = _python('experiments.evaluate', f'--checkpoint={checkpoint}', '--subset=1998',
                f'--json={out_dir}/aflw2000.json', f'--predictions_out={out_dir}/aflw2000_lms.npy')
  return cmd + ([f'--aflw2000_dir={aflw_dir}'] if aflw_dir else [])


def ensure_start(root):
  """The converted start model in ``<root>/mb05`` and its evaluation in ``<root>/a_start``."""
  mb05 = root / 'mb05'
  if not (mb05 / 'model_config.json').exists():
    pth = Path(FLAGS.pretrained) if FLAGS.pretrained else assets.asset(
        'pretrained', 'mb05_120x120.pth')
    print(f'converting {pth} -> {mb05}', flush=True)
    _call(_python('experiments.convert_checkpoint', f'--from_3ddfa_v2={pth}', f'--out={mb05}'),
          root / 'mb05.convert.log')
  out = root / START
  if not (out / 'aflw2000.json').exists():
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _call(eval_command(mb05, out), root / f'{START}.eval.log')
    (out / 'run_time.json').write_text(json.dumps(
        {'train_s': 0.0, 'eval_s': time.perf_counter() - t0}) + '\n')


def run_one(root, run, seed):
  workdir = root / f'{run}_s{seed}'
  if (workdir / 'aflw2000.json').exists():
    print(f'{workdir}: done, kept', flush=True)
    return
  print(f'{workdir}: training', flush=True)
  t0 = time.perf_counter()
  _call(train_command(run, seed, workdir, root, FLAGS.extra), root / f'{run}_s{seed}.train.log')
  t1 = time.perf_counter()
  _call(eval_command(workdir, workdir), root / f'{run}_s{seed}.eval.log')
  t2 = time.perf_counter()
  (workdir / 'run_time.json').write_text(json.dumps({'train_s': t1 - t0, 'eval_s': t2 - t1}) + '\n')
  print(f'{workdir}: trained in {t1 - t0:.0f} s, evaluated in {t2 - t1:.0f} s', flush=True)


# ----------------------------------------------------------------------------
# Collecting and reporting.


def _metrics(res):
  o, r = res['original'], res.get('reannotated', {})
  pose = res.get('pose', {})
  orig_pose = pose.get('originals') or {}
  return {'orig_bins': o['bins'], 'orig_mean_of_bins': o['mean_of_bins'], 'orig_mean': o['mean'],
          're_mean_of_bins': r.get('mean_of_bins', float('nan')),
          're_mean': r.get('mean', float('nan')),
          'yaw_mae': pose.get('yaw_mae_all', float('nan')),
          'pose_mae_mean': orig_pose.get('mean', float('nan')), 'n': o['n']}


def collect(root):
  """{run: [{'seed', 'metrics', 'time', 'dir'}]} for every finished run folder."""
  out = {}
  for d in sorted(root.iterdir()):
    m = re.fullmatch(r'(.+)_s(\d+)', d.name)
    name, seed = (m.group(1), int(m.group(2))) if m else (d.name, None)
    if not (d / 'aflw2000.json').exists() or (name not in RUNS and name != START):
      continue
    res = json.loads((d / 'aflw2000.json').read_text())
    t = json.loads((d / 'run_time.json').read_text()) if (d / 'run_time.json').exists() else {}
    steps = None
    if (d / 'flags.json').exists():
      steps = json.loads((d / 'flags.json').read_text())['train']['num_steps']
    out.setdefault(name, []).append({'seed': seed, 'metrics': _metrics(res), 'time': t,
                                     'dir': str(d), 'steps': steps})
  return out


def _mean_spread(values):
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.max() - v.min()) if v.size > 1 else float('nan')


def summarise(found):
  """Per run: mean and range over seeds of each metric."""
  rows = {}
  for name in [START] + list(RUNS):
    if name not in found:
      continue
    entries = found[name]
    row = {'seeds': [e['seed'] for e in entries], 'n_runs': len(entries),
           'steps': entries[0]['steps'],
           'train_s': float(np.mean([e['time'].get('train_s', np.nan) for e in entries]))}
    for k in ('orig_mean_of_bins', 'orig_mean', 're_mean_of_bins', 're_mean', 'yaw_mae',
              'pose_mae_mean'):
      row[k], row[k + '_range'] = _mean_spread([e['metrics'][k] for e in entries])
    bins = np.asarray([e['metrics']['orig_bins'] for e in entries], np.float64)
    row['orig_bins'] = bins.mean(0).tolist()
    row['per_seed'] = {str(e['seed']): e['metrics'] for e in entries}
    rows[name] = row
  return rows


def comparisons(rows):
  """Sentences comparing each run with the start and the previous run, against the seed spread."""
  out = []
  order = [n for n in [START] + list(RUNS) if n in rows]
  label = {START: '(a) start', **RUNS}

  def spread(*names):
    r = [rows[n]['orig_mean_of_bins_range'] for n in names]
    r = [x for x in r if np.isfinite(x)]
    return max(r) if r else float('nan')

  for i, n in enumerate(order[1:], 1):
    for ref in dict.fromkeys([START, order[i - 1], 'b_l3d']):
      if ref == n or ref not in rows or order.index(ref) > i:
        continue
      d = rows[n]['orig_mean_of_bins'] - rows[ref]['orig_mean_of_bins']
      s = spread(n, ref)
      verdict = ('better' if d < 0 else 'worse')
      if np.isfinite(s) and abs(d) < s:
        verdict = f'{verdict}, but by less than the seed-to-seed range ({s:.3f}): not a difference'
      elif np.isfinite(s):
        verdict = f'{verdict}, by more than the seed-to-seed range ({s:.3f})'
      else:
        verdict = f'{verdict} (one seed only: no spread to compare with)'
      out.append(f'{label[n]} vs {label[ref]}: {d:+.3f} NME, {verdict}.')
  return out


def plot_ced(found, root, path, aflw_dir=None):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  ds = aflw2000.load(Path(aflw_dir) if aflw_dir else assets.asset('aflw2000-3d'))
  idx = ds.subset_indices(1998)
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  label = {START: '(a) start (3DDFA_V2 mb05)', **RUNS}
  for name in [START] + list(RUNS):
    if name not in found:
      continue
    e = sorted(found[name], key=lambda e: e['seed'] if e['seed'] is not None else -1)[0]
    lms = np.load(Path(e['dir']) / 'aflw2000_lms.npy')
    _, per = evaluation.aflw2000_nme(np.swapaxes(lms, 1, 2), ds.pts68[idx], ds.roi_boxes[idx],
                                     ds.yaws[idx])
    t, frac, _ = evaluation.ced_curve(per * 100, 10.0)
    seed = '' if e['seed'] is None else f' (seed {e["seed"]})'
    ax.plot(t, frac * 100, label=f'{label[name]}{seed}: mean {per.mean() * 100:.3f}')
  ax.set_xlabel('NME (%), 68 points, original ground truth')
  ax.set_ylabel('images (%)')
  ax.set_title('AFLW2000-3D, 1,998 images: cumulative error distribution')
  ax.set_xlim(0, 10)
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _fmt(v, r=None):
  if r is None or not np.isfinite(r):
    return f'{v:.3f}'
  return f'{v:.3f} ± {r / 2:.3f}'


def write_page(rows, found, results_dir, root):
  results_dir = Path(results_dir)
  results_dir.mkdir(parents=True, exist_ok=True)
  ced_png = results_dir / 'aflw2000_ablation_ced.png'
  plot_ced(found, root, ced_png)
  label = {START: '(a) start model', **RUNS}
  lines = [
      '# AFLW2000-3D ablation: does 2D in-the-wild data improve a real 3D regressor?',
      '',
      '_Written by `python -m experiments.ablation_aflw2000` from the runs\' JSON; do not edit._',
      '',
      'Start: 3DDFA_V2\'s MobileNet x0.5 (trained on 300W-LP), converted and widened to 4 input '
      'channels with zero FLM weights. 3D side: faces rendered from the real BFM '
      '(`Model_PAF.pkl`), labels drawn around 300W-LP\'s statistics. Wild side: the aflw-wild '
      'crops (21 AFLW points mapped to the 18). Test: AFLW2000-3D, 1,998-image subset, FLM from '
      '`detect_testData_1998.txt`; 68-point NME (%) normalised by the ground-truth box. '
      'Settings: `experiments/configs/aflw2000/base.flags`.',
      '',
      'Values are the mean over seeds ± half the range (max - min) between seeds.',
      '',
      '| run | seeds | steps | NME <30° | 30-60° | >60° | mean of bins | plain mean | '
      're-annotated mean of bins | yaw MAE (°) | train time (s) |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for name, r in rows.items():
    b = r['orig_bins']
    seeds = ','.join('-' if s is None else str(s) for s in r['seeds'])
    lines.append(
        f"| {label[name]} | {seeds} | {r['steps'] or 0} | {b[0]:.3f} | {b[1]:.3f} | {b[2]:.3f} | "
        f"**{_fmt(r['orig_mean_of_bins'], r['orig_mean_of_bins_range'])}** | "
        f"{_fmt(r['orig_mean'], r['orig_mean_range'])} | "
        f"{_fmt(r['re_mean_of_bins'], r['re_mean_of_bins_range'])} | "
        f"{_fmt(r['yaw_mae'], r['yaw_mae_range'])} | {r['train_s']:.0f} |")
  lines += ['', 'Published (METHOD.md section 7, original ground truth, mean of bins): '
            + '; '.join(f'{k} {v[3]:.2f}' for k, v in published.AFLW2000_NME.items()
                        if len(v) > 3) + '.', '',
            '## Differences against the seed-to-seed spread', '']
  lines += [f'- {s}' for s in comparisons(rows)]
  lines += ['', '## Per seed', '', '| run | seed | mean of bins | plain mean | re-annotated | '
            'yaw MAE | train (s) | eval (s) |', '|---|---|---|---|---|---|---|---|']
  for name in rows:
    for e in sorted(found[name], key=lambda e: -1 if e['seed'] is None else e['seed']):
      m, t = e['metrics'], e['time']
      lines.append(f"| {label[name]} | {'-' if e['seed'] is None else e['seed']} | "
                   f"{m['orig_mean_of_bins']:.3f} | {m['orig_mean']:.3f} | "
                   f"{m['re_mean_of_bins']:.3f} | {m['yaw_mae']:.3f} | "
                   f"{t.get('train_s', float('nan')):.0f} | {t.get('eval_s', float('nan')):.0f} |")
  lines += ['', f'![CED]({ced_png.name})', '', '## Commands', '', '```',
            'python -m experiments.ablation_aflw2000 --seeds '
            + ','.join(sorted({str(s) for r in rows.values() for s in r['seeds'] if s is not None}))]
  lines += ['# which runs, per run and seed (the start model: experiments.convert_checkpoint, then',
            f'# experiments.evaluate --checkpoint={root}/mb05 --subset=1998):']
  for name in RUNS:
    if name in rows:
      lines.append('python ' + ' '.join(
          train_command(name, '<seed>', f'{root}/{name}_s<seed>', root)[1:]))
      lines.append('python ' + ' '.join(
          eval_command(f'{root}/{name}_s<seed>', f'{root}/{name}_s<seed>')[1:]))
  lines += ['```', '', f'Machine: {platform.node()}, {platform.machine()}, '
            f'{os.cpu_count()} CPUs; written {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.',
            '']
  (results_dir / 'aflw2000_ablation.md').write_text('\n'.join(lines))
  (results_dir / 'aflw2000_ablation.json').write_text(json.dumps(
      {'rows': rows, 'comparisons': comparisons(rows), 'command': ' '.join(sys.argv)},
      indent=1) + '\n')
  return results_dir / 'aflw2000_ablation.md'


def update_flagfiles(rows):
  for name in RUNS:
    path = CONFIGS / f'{name}.flags'
    if name not in rows or not path.exists():
      continue
    r = rows[name]
    block = (f"# {r['n_runs']} seed(s) {r['seeds']}, {r['steps']} steps, "
             f"{r['train_s'] / 60:.1f} min of training each on this 2-core CPU.\n"
             f"# AFLW2000-3D (1998) NME mean of bins {_fmt(r['orig_mean_of_bins'], r['orig_mean_of_bins_range'])} "
             f"(plain mean {r['orig_mean']:.3f}, re-annotated {r['re_mean_of_bins']:.3f}); "
             f"start model {rows[START]['orig_mean_of_bins']:.3f}.\n" if START in rows else '')
    text = path.read_text()
    new = re.sub(r'(# --- result[^\n]*\n).*?(# --- end result ---)',
                 lambda m: m.group(1) + block + m.group(2), text, flags=re.S)
    path.write_text(new)


def main(argv):
  del argv
  root = Path(FLAGS.root)
  try:
    unknown = [r for r in FLAGS.runs if r not in RUNS]
    if unknown:
      raise DaslError(f'--runs: unknown {unknown}; use some of {list(RUNS)}')
    seeds = [int(s) for s in FLAGS.seeds]
    root.mkdir(parents=True, exist_ok=True)
    if not FLAGS.page_only:
      ensure_start(root)
      for seed in seeds:
        for run in FLAGS.runs:
          run_one(root, run, seed)
    found = collect(root)
    if not found:
      raise DaslError(f'{root}: no finished runs (no */aflw2000.json) to write a page from')
    rows = summarise(found)
    page = write_page(rows, found, FLAGS.results_dir, root)
    if FLAGS.update_flagfiles:
      update_flagfiles(rows)
  except DaslError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(page.read_text())


if __name__ == '__main__':
  app.run(main)
