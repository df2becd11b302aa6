r"""The AFLW2000-3D study of 2DASL's losses (issues 6 and 12): train, evaluate, write the page.

    python -m experiments.ablation_aflw2000 [--seeds 0,1,2] [--runs b_l3d,...]
        [--levers lr_5e-5,...] [--root runs/aflw2000] [--page_only]

Arm (a) is the start model, 3DDFA_V2's MobileNet x0.5 converted into
``<root>/mb05``. Every other arm ``experiments/configs/aflw2000/<arm>.flags``
trains from it into ``<root>/<arm>_s<seed>`` (a finished run, one with
``aflw2000.json``, is kept; an interrupted one resumes), and AFLW2000-3D is
read once, on the checkpoint the run chose on its validation split
(``selection.json``). Levers (``dasl_jax.study.LEVERS``) train on seed 0 into
``<root>/levers/`` and are scored on validation only.

The page ``experiments/results/aflw2000_ablation.md`` (with its JSON, the CED,
the validation curves and a picture grid) is written from the runs' files by
``dasl_jax.study.write_page``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from absl import app
from absl import flags

from dasl_jax import assets
from dasl_jax import study
from dasl_jax.errors import DaslError

CONFIGS = Path('experiments/configs/aflw2000')

flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds of every arm.')
flags.DEFINE_list('runs', list(study.ARMS), 'Arms to train (flagfiles under '
                  'experiments/configs/aflw2000).')
flags.DEFINE_list('levers', [], f'Levers to try on seed 0, validation only: some of '
                  f'{list(study.LEVERS)} (or "all").')
flags.DEFINE_string('root', 'runs/aflw2000', 'Work directories go here.')
flags.DEFINE_string('pretrained', None, "3DDFA_V2's mb05_120x120.pth (default: "
                    '$DASL_ASSETS/pretrained/mb05_120x120.pth); converted once into <root>/mb05.')
flags.DEFINE_string('aflw2000_dir', None, 'AFLW2000-3D folder (default $DASL_ASSETS/aflw2000-3d).')
flags.DEFINE_bool('page_only', False, 'Do not train or evaluate; write the page from what exists.')
flags.DEFINE_list('extra', [], 'Extra training flags for every run (e.g. '
                  '--extra=--config.train.num_steps=5 for a smoke run).')
flags.DEFINE_string('results_dir', 'experiments/results', 'Where the page, plots and JSON go.')

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


def train_command(arm, seed, workdir, root, extra=()):
  return _python('experiments.train', f'--flagfile={CONFIGS / arm}.flags',
                 f'--workdir={workdir}', f'--config.train.seed={seed}',
                 f'--config.model.init_checkpoint={root}/mb05',
                 f'--config.data.teacher_checkpoint={root}/mb05',
                 f'--config.data.teacher_cache={root}/cache',
                 '--config.train.progress=False', *extra)


def eval_command(checkpoint, out_json, step=None, flm=None, lms_out=None):
  cmd = _python('experiments.evaluate', f'--checkpoint={checkpoint}', '--subset=1998',
                f'--json={out_json}')
  cmd += [f'--step={step}'] if step is not None else []
  cmd += [f'--flm={flm}'] if flm else []
  cmd += [f'--predictions_out={lms_out}'] if lms_out else []
  return cmd + ([f'--aflw2000_dir={FLAGS.aflw2000_dir}'] if FLAGS.aflw2000_dir else [])


def ensure_start(root):
  """The converted start model in ``<root>/mb05`` and its evaluation in ``<root>/a_start``."""
  mb05 = root / 'mb05'
  if not (mb05 / 'model_config.json').exists():
    pth = Path(FLAGS.pretrained) if FLAGS.pretrained else assets.asset(
        'pretrained', 'mb05_120x120.pth')
    print(f'converting {pth} -> {mb05}', flush=True)
    _call(_python('experiments.convert_checkpoint', f'--from_3ddfa_v2={pth}', f'--out={mb05}'),
          root / 'mb05.convert.log')
  out = root / study.START
  if not (out / 'aflw2000.json').exists():
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _call(eval_command(mb05, out / 'aflw2000.json', lms_out=out / 'aflw2000_lms.npy'),
          root / f'{study.START}.eval.log')
    (out / 'run_time.json').write_text(json.dumps(
        {'train_s': 0.0, 'eval_s': time.perf_counter() - t0}) + '\n')


def run_one(root, arm, seed):
  """Train one arm and seed, then read the test set once on its chosen checkpoint."""
  workdir = root / f'{arm}_s{seed}'
  if (workdir / 'aflw2000.json').exists():
    print(f'{workdir}: done, kept', flush=True)
    return
  print(f'{workdir}: training', flush=True)
  t0 = time.perf_counter()
  _call(train_command(arm, seed, workdir, root, FLAGS.extra), root / f'{arm}_s{seed}.train.log')
  t1 = time.perf_counter()
  best = json.loads((workdir / 'selection.json').read_text())['best_step']
  if arm == 'e_full':
    _call(eval_command(workdir, workdir / 'aflw2000_bootstrap.json', best, 'bootstrap'),
          root / f'{arm}_s{seed}.eval_bootstrap.log')
  _call(eval_command(workdir, workdir / 'aflw2000.json', best,
                     lms_out=workdir / 'aflw2000_lms.npy'), root / f'{arm}_s{seed}.eval.log')
  t2 = time.perf_counter()
  (workdir / 'run_time.json').write_text(json.dumps({'train_s': t1 - t0, 'eval_s': t2 - t1})
                                         + '\n')
  print(f'{workdir}: trained in {t1 - t0:.0f} s, evaluated (step {best}) in {t2 - t1:.0f} s',
        flush=True)


def run_lever(root, name):
  """One lever on seed 0, validation only (no test-set evaluation)."""
  _, arm, extra = study.LEVERS[name]
  workdir = root / 'levers' / f'{name}_s0'
  if (workdir / 'selection.json').exists():
    print(f'{workdir}: done, kept', flush=True)
    return
  workdir.parent.mkdir(parents=True, exist_ok=True)
  print(f'{workdir}: training (validation only)', flush=True)
  _call(train_command(arm, 0, workdir, root, [*extra, *FLAGS.extra]),
        workdir.parent / f'{name}_s0.train.log')


def commands(root, seeds):
  runs = []
  for arm in study.ARMS:
    w = f'{root}/{arm}_s<seed>'
    runs.append('python ' + ' '.join(train_command(arm, '<seed>', w, root)[1:]))
    runs.append('python ' + ' '.join(eval_command(w, f'{w}/aflw2000.json', '<chosen step>',
                                                  lms_out=f'{w}/aflw2000_lms.npy')[1:]))
  return {'study': [f"python -m experiments.ablation_aflw2000 --seeds {','.join(seeds)} "
                    f"--levers {','.join(study.LEVERS)}"], 'runs': runs}


def main(argv):
  del argv
  root = Path(FLAGS.root)
  try:
    unknown = [r for r in FLAGS.runs if r not in study.ARMS]
    if unknown:
      raise DaslError(f'--runs: unknown {unknown}; use some of {list(study.ARMS)}')
    levers = list(study.LEVERS) if FLAGS.levers == ['all'] else FLAGS.levers
    bad = [x for x in levers if x not in study.LEVERS]
    if bad:
      raise DaslError(f'--levers: unknown {bad}; use some of {list(study.LEVERS)} or all')
    try:
      seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
      raise DaslError(f'--seeds: whole numbers separated by commas, got {FLAGS.seeds}') from None
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not FLAGS.page_only:
      ensure_start(root)
      for seed in seeds:
        for arm in FLAGS.runs:
          run_one(root, arm, seed)
      for name in levers:
        run_lever(root, name)
    found = study.collect(root)
    if not found:
      raise DaslError(f'{root}: no finished runs (no */aflw2000.json) to write a page from')
    aflw_dir = Path(FLAGS.aflw2000_dir) if FLAGS.aflw2000_dir else assets.asset('aflw2000-3d')
    spent = sum(e['time'].get('train_s', 0) + e['time'].get('eval_s', 0)
                for v in found.values() for e in v)
    page = study.write_page(found, FLAGS.results_dir, root, aflw_dir,
                            commands(root, [str(s) for s in seeds]),
                            study.collect_levers(root), spent)
    print(f'{page} written ({time.perf_counter() - t0:.0f} s)')
  except DaslError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
