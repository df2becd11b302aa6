"""Running the AFLW2000-3D study (issue 12): each arm and seed trained from the
converted start model, evaluated once on the checkpoint its validation split chose,
levers on validation only, then the page (:mod:`dasl_jax.evaluation.study`).

Every step is a subprocess of a project command (``experiments.train``,
``experiments.evaluate``, ``experiments.convert_checkpoint``), logged to a file
under ``root``, so a finished run is kept and an interrupted one resumes.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from dasl_jax import assets
from dasl_jax.evaluation import study
from dasl_jax.errors import DaslError

CONFIGS = Path('experiments/configs/aflw2000')


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


def dlib_file(root):
  return Path(root) / 'dlib' / 'aflw_wild_dlib68.csv'


def train_command(arm, seed, workdir, root, extra=()):
  dlib = [f'--config.data.wild_landmarks={dlib_file(root)}'] if arm in study.DLIB_ARMS else []
  start = f'{root}/{study.H_START}' if arm in study.H_ARMS else f'{root}/mb05'
  if arm in study.H_ARMS or arm == study.H_START:
    dlib += [f'--config.data.synthetic_cache={root}/synthetic_cache']
  if arm in study.H_ARMS:
    scheme = f'{root}/scheme.json'
    dlib += [f'--config.data.val_scheme={scheme}']
    if arm != 'h_syn':
      dlib += [f'--config.data.wild_scheme={scheme}']
  return _python('experiments.train', f'--flagfile={CONFIGS / arm}.flags',
                 f'--workdir={workdir}', f'--config.train.seed={seed}',
                 f'--config.model.init_checkpoint={start}',
                 f'--config.data.teacher_checkpoint={root}/mb05',
                 f'--config.data.teacher_cache={root}/cache',
                 '--config.train.progress=False', *dlib, *extra)


def ensure_dlib(root):
  """dlib's 68-point labels of the aflw-wild crops in ``<root>/dlib`` (made once)."""
  out = dlib_file(root)
  if out.exists():
    return
  out.parent.mkdir(parents=True, exist_ok=True)
  wild = assets.asset('aflw-wild')
  print(f'labelling the aflw-wild crops with dlib -> {out}', flush=True)
  _call(_python('experiments.label_dlib', f'--images={wild / "images"}',
                f'--list={wild / "list.txt"}', f'--out={out}', '--progress=False'),
        Path(root) / 'dlib.label.log')


def eval_command(checkpoint, out_json, step=None, flm=None, lms_out=None, aflw2000_dir=None,
                 tta=None):
  cmd = _python('experiments.evaluate', f'--checkpoint={checkpoint}', '--subset=1998',
                f'--json={out_json}')
  cmd += [f'--tta={tta}'] if tta else []
  cmd += [f'--step={step}'] if step is not None else []
  cmd += [f'--flm={flm}'] if flm else []
  cmd += [f'--predictions_out={lms_out}'] if lms_out else []
  return cmd + ([f'--aflw2000_dir={aflw2000_dir}'] if aflw2000_dir else [])


def ensure_start(root, pretrained=None, aflw2000_dir=None):
  """The converted start model in ``<root>/mb05`` and its evaluation in ``<root>/a_start``."""
  mb05 = root / 'mb05'
  if not (mb05 / 'model_config.json').exists():
    pth = Path(pretrained) if pretrained else assets.asset('pretrained', 'mb05_120x120.pth')
    print(f'converting {pth} -> {mb05}', flush=True)
    _call(_python('experiments.convert_checkpoint', f'--from_3ddfa_v2={pth}', f'--out={mb05}'),
          root / 'mb05.convert.log')
  out = root / study.START
  if not (out / 'aflw2000.json').exists():
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _call(eval_command(mb05, out / 'aflw2000.json', lms_out=out / 'aflw2000_lms.npy',
                       aflw2000_dir=aflw2000_dir),
          root / f'{study.START}.eval.log')
    (out / 'run_time.json').write_text(json.dumps(
        {'train_s': 0.0, 'eval_s': time.perf_counter() - t0}) + '\n')


def ensure_tta(root, aflw2000_dir=None):
  """Flip test-time averaging (``experiments.evaluate --tta flip``): the start model
  into ``<root>/a_tta`` (arm a_tta), and every finished run of issue 20's arms on its
  chosen checkpoint (``aflw2000_tta.json``, an extra column: never a selection)."""
  out = root / study.START_TTA
  if not (out / 'aflw2000.json').exists():
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _call(eval_command(root / 'mb05', out / 'aflw2000.json', lms_out=out / 'aflw2000_lms.npy',
                       aflw2000_dir=aflw2000_dir, tta='flip'),
          root / f'{study.START_TTA}.eval.log')
    (out / 'run_time.json').write_text(json.dumps(
        {'train_s': 0.0, 'eval_s': time.perf_counter() - t0}) + '\n')
  for arm in study.ARMS_ISSUE20:
    for w in sorted(root.glob(f'{arm}_s*')):
      if (w / 'aflw2000.json').exists() and not (w / 'aflw2000_tta.json').exists():
        best = json.loads((w / 'selection.json').read_text())['best_step']
        _call(eval_command(w, w / 'aflw2000_tta.json', best, aflw2000_dir=aflw2000_dir,
                           tta='flip'), root / f'{w.name}.eval_tta.log')


def ensure_h_start(root, extra=(), aflw2000_dir=None):
  """The synthetic start ``<root>/h_start`` (trained once, read on AFLW2000-3D once at its
  last step) and ``<root>/scheme.json``, the def arms' fitted scheme that the h arms read."""
  from dasl_jax.evaluation import study_def
  if not (root / 'scheme.json').exists():
    found = study_def.find_scheme(root)
    if found is None:
      raise DaslError(f'{root}: the h arms read the def arms\' fitted scheme; train a def arm '
                      'first (e.g. --runs e_def)')
    (root / 'scheme.json').write_text(found.read_text())
  w = root / study.H_START
  if (w / 'aflw2000.json').exists():
    return
  t0 = time.perf_counter()
  _call(train_command(study.H_START, 0, w, root, extra), root / f'{study.H_START}.train.log')
  t1 = time.perf_counter()
  steps = json.loads((w / 'flags.json').read_text())['train']['num_steps']
  _call(eval_command(w, w / 'aflw2000.json', steps, lms_out=w / 'aflw2000_lms.npy',
                     aflw2000_dir=aflw2000_dir), root / f'{study.H_START}.eval.log')
  (w / 'run_time.json').write_text(json.dumps({'train_s': t1 - t0,
                                               'eval_s': time.perf_counter() - t1}) + '\n')


def run_one(root, arm, seed, extra=(), aflw2000_dir=None):
  """Train one arm and seed, then read the test set once on its chosen checkpoint."""
  workdir = root / f'{arm}_s{seed}'
  if (workdir / 'aflw2000.json').exists():
    print(f'{workdir}: done, kept', flush=True)
    return
  print(f'{workdir}: training', flush=True)
  t0 = time.perf_counter()
  _call(train_command(arm, seed, workdir, root, extra), root / f'{arm}_s{seed}.train.log')
  t1 = time.perf_counter()
  best = json.loads((workdir / 'selection.json').read_text())['best_step']
  if arm in ('e_full', 'e_def'):
    _call(eval_command(workdir, workdir / 'aflw2000_bootstrap.json', best, 'bootstrap',
                       aflw2000_dir=aflw2000_dir),
          root / f'{arm}_s{seed}.eval_bootstrap.log')
  _call(eval_command(workdir, workdir / 'aflw2000.json', best,
                     lms_out=workdir / 'aflw2000_lms.npy', aflw2000_dir=aflw2000_dir),
        root / f'{arm}_s{seed}.eval.log')
  t2 = time.perf_counter()
  (workdir / 'run_time.json').write_text(json.dumps({'train_s': t1 - t0, 'eval_s': t2 - t1})
                                         + '\n')
  print(f'{workdir}: trained in {t1 - t0:.0f} s, evaluated (step {best}) in {t2 - t1:.0f} s',
        flush=True)


def run_lever(root, name, extra=()):
  """One lever on seed 0, validation only (no test-set evaluation)."""
  _, arm, lever_extra = study.LEVERS[name]
  workdir = root / 'levers' / f'{name}_s0'
  if (workdir / 'selection.json').exists():
    print(f'{workdir}: done, kept', flush=True)
    return
  workdir.parent.mkdir(parents=True, exist_ok=True)
  print(f'{workdir}: training (validation only)', flush=True)
  _call(train_command(arm, 0, workdir, root, [*lever_extra, *extra]),
        workdir.parent / f'{name}_s0.train.log')


def run_diagnostic(root, name, extra=()):
  """One fair-start diagnostic (``study_def.DIAGNOSTICS``): seed 0, the first steps."""
  from dasl_jax.evaluation import study_def
  _, arm, flags = study_def.DIAGNOSTICS[name]
  workdir = root / 'fairstart' / name
  if (workdir / 'selection.json').exists():
    print(f'{workdir}: done, kept', flush=True)
    return
  workdir.parent.mkdir(parents=True, exist_ok=True)
  print(f'{workdir}: diagnostic run', flush=True)
  try:
    _call(train_command(arm, 0, workdir, root,
                        [*study_def.diagnostic_flags(), *flags, *extra]),
          workdir.parent / f'{name}.train.log')
  except DaslError as e:  # a diverging variant is a result, not a failure of the study
    print(f'{workdir}: {e}', flush=True)


def analyses(root, found, results_dir, aflw_dir):
  """Issue 20's analyses from the runs on disk (``study_def``): the fitted scheme (table
  and picture), the label noise on validation, the fair-start diagnostics, which
  landmarks moved."""
  from dasl_jax.evaluation import study_def as D
  from dasl_jax.face_model import morphable_model as mm
  from dasl_jax.face_model import schemes as S
  from dasl_jax.viz import schemes as VS
  out = {}
  Path(results_dir).mkdir(parents=True, exist_ok=True)  # the pictures are written before the page
  model68 = mm.load(assets.asset('bfm', 'keypoints68'))
  path = D.find_scheme(root)
  if path is not None:
    scheme = S.load(path, model68)
    png = Path(results_dir) / 'aflw2000_ablation_scheme.png'
    VS.plot_scheme(scheme, model68, png, title="AFLW's 21 points on the mean face (fitted)")
    out['scheme'] = {'file': str(path), 'fit': {k: v for k, v in scheme.fit.items()
                                                if k != 'points'},
                     'rows': D.scheme_rows(scheme), 'png': png.name}
    noise = D.label_noise_table(root, scheme, model68, assets.asset('aflw-wild'), dlib_file(root))
    if noise:
      out['noise'] = noise
  dv = D.dlib_validation(found, root, model68, assets.asset('aflw-wild'), dlib_file(root),
                         arms=[a for a in (study.START, study.START_TTA) + study.ARMS_ISSUE20
                               if a in found and a not in study.H_ARMS])
  if dv and dv['rows']:
    out['dlib_validation'] = dv
  diag = D.diagnostics_table(root)
  if diag:
    out['diagnostics'] = {k: {'curve': {str(s): c for s, c in v['curve'].items()},
                              'max_grad_norm': v['max_grad_norm'], 'stopped': v['stopped']}
                          for k, v in diag.items()}
  arms = [a for a in (study.START_TTA,) + study.ARMS_ISSUE20
          if a in found and a not in study.H_ARMS]  # the h arms start elsewhere
  if study.START in found and arms:
    br = D.landmark_breakdown(found, aflw_dir, study.START, arms)
    png = Path(results_dir) / 'aflw2000_ablation_landmarks.png'
    D.plot_breakdown(br, study.LABELS, png)
    out['breakdown'] = {'png': png.name, 'regions': D.region_rows(br), **br}
  return out


def commands(root, seeds):
  runs = []
  for arm in study.ARMS:
    w = f'{root}/{arm}_s<seed>'
    runs.append('python ' + ' '.join(train_command(arm, '<seed>', w, root)[1:]))
    runs.append('python ' + ' '.join(eval_command(w, f'{w}/aflw2000.json', '<chosen step>',
                                                  lms_out=f'{w}/aflw2000_lms.npy')[1:]))
  return {'study': [f"python -m experiments.ablation_aflw2000 --seeds {','.join(seeds)} "
                    f"--levers {','.join(study.LEVERS)}"], 'runs': runs}


def run_study(root, seeds, runs, levers, page_only=False, results_dir='experiments/results',
              pretrained=None, aflw2000_dir=None, extra=(), diagnostics=(), tta=True):
  """Train and evaluate what is missing, then write the page; returns its path.

  Args:
    seeds: ints; runs: arm names (``study.ARMS``); levers: names (``study.LEVERS``).
  """
  unknown = [r for r in runs if r not in study.ARMS]
  if unknown:
    raise DaslError(f'--runs: unknown {unknown}; use some of {list(study.ARMS)}')
  bad = [x for x in levers if x not in study.LEVERS]
  if bad:
    raise DaslError(f'--levers: unknown {bad}; use some of {list(study.LEVERS)} or all')
  from dasl_jax.evaluation import study_def
  bad = [x for x in diagnostics if x not in study_def.DIAGNOSTICS]
  if bad:
    raise DaslError(f'--diagnostics: unknown {bad}; use some of {list(study_def.DIAGNOSTICS)} '
                    'or all')
  root = Path(root)
  root.mkdir(parents=True, exist_ok=True)
  if not page_only:
    ensure_start(root, pretrained, aflw2000_dir)
    if any(a in study.DLIB_ARMS for a in runs) or any(
        study.LEVERS[x][1] in study.DLIB_ARMS for x in levers):
      ensure_dlib(root)
    for name in diagnostics:
      run_diagnostic(root, name, extra)
    for name in levers:  # levers first: they choose the recipe the arms then run
      run_lever(root, name, extra)
    if any(a in study.H_ARMS for a in runs):
      ensure_h_start(root, extra, aflw2000_dir)
    for seed in seeds:
      for arm in runs:
        run_one(root, arm, seed, extra, aflw2000_dir)
    if tta:
      ensure_tta(root, aflw2000_dir)
  found = study.collect(root)
  if not found:
    raise DaslError(f'{root}: no finished runs (no */aflw2000.json) to write a page from')
  aflw_dir = Path(aflw2000_dir) if aflw2000_dir else assets.asset('aflw2000-3d')
  spent = sum(e['time'].get('train_s', 0) + e['time'].get('eval_s', 0)
              for v in found.values() for e in v)
  return study.write_page(found, results_dir, root, aflw_dir,
                          commands(root, [str(s) for s in seeds]),
                          study.collect_levers(root), spent,
                          analyses(root, found, results_dir, aflw_dir))
