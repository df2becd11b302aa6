"""Smoke test of the AFLW2000-3D study driver (issues 6 and 12): the real start
model, teacher labels on real aflw-wild crops, a validation split, a few steps
of the full 2DASL run, the once-per-run test evaluation (detector and
bootstrapped FLM) and the results page, end to end."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.asset_marks import requires_assets
from tests.helpers.train_runs import heavy_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@requires_assets('pretrained', 'mb05_120x120.pth')
@requires_assets('pretrained', 'param_mean_std_62d_120x120.pkl')
@requires_assets('bfm', 'Model_PAF.pkl')
@requires_assets('aflw-wild', 'pts21.npy')
@requires_assets('aflw2000-3d', 'detect_testData_1998.txt')
def test_ablation_smoke(tmp_path, assets):
  root, results = tmp_path / 'runs', tmp_path / 'results'
  # The teacher labels 96 crops (not the 6,360 of a real run) to keep this quick.
  names = (assets / "aflw-wild" / "list.txt").read_text().split()[:96]
  (tmp_path / 'teacher.txt').write_text('\n'.join(names) + '\n')
  extra = ['--config.train.num_steps=4', '--config.train.log_every=1',
           '--config.train.eval_every=2', '--config.train.checkpoint_every=2',
           f'--config.data.teacher_images={assets}/aflw-wild/images',
           f'--config.data.teacher_list={tmp_path}/teacher.txt',
           f'--config.data.teacher_cache={tmp_path}/cache', '--config.data.val_size=48',
           '--config.data.batch_size_3d=8', '--config.data.batch_size_wild=8']
  # Its evaluations run longer than they compile: -O1, not the tests' -O0 (and, as
  # train_runs.env gives the training commands, no other XLA flag of the caller).
  r = subprocess.run([sys.executable, '-m', 'experiments.ablation_aflw2000', f'--root={root}',
                      '--runs=e_full', '--seeds=0', f'--results_dir={results}',
                      '--extra=' + ','.join(extra)],
                     cwd=REPO, env=heavy_env(), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  # The start model on the 1,998 images is 3DDFA_V2's published figure (3.782 measured
  # with the original PyTorch code on this subset).
  start = json.loads((root / 'a_start' / 'aflw2000.json').read_text())
  assert start['subset'] == 1998 and abs(start['original']['mean_of_bins'] - 3.782) < 0.005
  run = root / 'e_full_s0'
  test = json.loads((run / 'aflw2000.json').read_text())
  boot = json.loads((run / 'aflw2000_bootstrap.json').read_text())
  assert test['flm'].startswith('detector') and test['original']['n'] == 1998
  assert boot['flm'].startswith('bootstrap')
  assert np.isfinite(test['original']['mean_of_bins'])
  log = [json.loads(l) for l in (run / 'log.jsonl').read_text().splitlines()]
  steps = [l for l in log if 'lsc' in l]
  assert [l['step'] for l in steps] == [1, 2, 3, 4]
  assert all(np.isfinite(l['l2d_con']) and l['l2d_con'] > 0 for l in steps)  # wild side on
  assert all(0 <= l['critic_acc_mismatch'] <= 1 for l in steps)
  # Validation at steps 0, 2, 4 chose the checkpoint that the test set was read on.
  vals = [l for l in log if 'val21_nme' in l]
  assert [l['step'] for l in vals] == [0, 2, 4]
  sel = json.loads((run / 'selection.json').read_text())
  # Step 0 (the start model) is a candidate too: "do not train" can win (issue 20).
  best = min(vals, key=lambda l: l['val21_nme'])['step']
  assert sel['best_step'] == best and sel['metric'] == 'val21_nme'
  data = json.loads((run / 'data.json').read_text())
  flags = json.loads((run / 'flags.json').read_text())
  assert flags['data']['source_3d'] == 'teacher' and flags['model']['init_checkpoint']
  assert data  # what each side held, written for the reader
  page = (results / 'aflw2000_ablation.md').read_text()
  assert '(a) start model' in page and '(e) + self-critic' in page
  for png in ('ced', 'validation'):
    assert (results / f'aflw2000_ablation_{png}.png').stat().st_size > 10000
  summary = json.loads((results / 'aflw2000_ablation.json').read_text())
  # The study reads the start model with flip averaging too (issue 20's a_tta): on the
  # 1,998 images it measured 3.673 against 3.781 without.
  assert set(summary['rows']) == {'a_start', 'a_tta', 'e_full'}
  tta = summary['rows']['a_tta']['orig_mean_of_bins']
  assert abs(tta - 3.673) < 0.01 and tta < summary['rows']['a_start']['orig_mean_of_bins']
  row = summary['rows']['e_full']
  for key in ('orig_mean_of_bins', 'orig_mean_of_bins_range', 're_mean_of_bins', 'per_seed',
              'bootstrap_orig_mean_of_bins', 'val21_nme', 'critic_acc_real'):
    assert key in row, key
  assert abs(row['orig_mean_of_bins'] - test['original']['mean_of_bins']) < 1e-9
