"""The paper's recipe (experiments/configs/2dasl_300wlp.flags) runs as written on a tiny
dataset in 3DDFA's 300W-LP layout written by dasl_jax.data.synthetic_300wlp."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from dasl_jax.io import checkpoint
from dasl_jax.geometry import landmarks as LM
from dasl_jax.face_model import morphable_model as MM
from dasl_jax.geometry import params as P
from dasl_jax.data import readers as R
from dasl_jax.data import synthetic as SYN
from dasl_jax.data import synthetic_300wlp as W
from dasl_jax.errors import DaslError
from tests.helpers.asset_marks import asset_path, requires_assets
from tests.helpers.train_runs import REPO, cache_dir, env

needs_bfm = requires_assets('bfm', 'Model_PAF.pkl')
FLAGFILE = REPO / 'experiments' / 'configs' / '2dasl_300wlp.flags'


@pytest.fixture(scope='module')
def tiny_300wlp(tmp_path_factory):
  root = tmp_path_factory.mktemp('lp') / '3DDFA'
  return root, W.write_300wlp(root, 16, asset_path('bfm'), seed=4)


@needs_bfm
def test_layout_reads_back_with_the_300wlp_reader(tiny_300wlp):
  root, paths = tiny_300wlp
  assert paths['dir_300wlp'] == root / 'train_aug_120x120'
  assert (root / 'train.configs' / 'train_aug_120x120.list.train').exists()
  assert (root / 'train.configs' / 'param_all_norm.pkl').exists()
  bfm = asset_path('bfm')
  model = MM.load(bfm / 'keypoints68')
  stats = P.load_param_stats(bfm / 'param_whitening.pkl')
  src = R.TrainAugSource(paths['dir_300wlp'], paths['list'], paths['params'], stats, model,
                         'v1', landmark_file=paths['landmarks'])
  assert len(src) == 16
  # The renderer's own landmarks and images (synthetic.py's projection) against what
  # the reader derives from the written files (readers.lms68_from_params of the labels).
  render, label = SYN.load_bfm_render_model(bfm)
  faces = SYN.SyntheticFaces(render, '3d', 16, 4, stats, 'v1', prior=SYN.gaussian_prior(stats),
                             label_model=label)
  for i in (0, 7, 15):
    ex, ref = src[i], faces[i]
    np.testing.assert_allclose(ex['lms68'], ref['lms68'], atol=0.05)
    np.testing.assert_allclose(ex['params'], ref['params'], rtol=1e-6, atol=1e-6)
    # JPEG q95 of a noisy render: a few grey levels off; another face is far off
    err = np.abs(ex['image'].astype(float) - ref['image']).mean()
    other = np.abs(ex['image'].astype(float) - faces[(i + 1) % 16]['image']).mean()
    assert err < 8.0 and other > 3 * err, (err, other)
    # FLM points from the "FAN" file: the 18 selected landmarks plus ~1 px noise.
    d = np.linalg.norm(ex['points18'] - LM.select18_np(ref['lms68']), axis=-1)
    assert ex['mask18'].min() == 1 and 0.2 < d.mean() < 3.0
    assert 0 < ex['lms68'].min() and ex['lms68'].max() < 120  # a face inside the crop


def test_bad_input_is_one_line(tmp_path):
  with pytest.raises(DaslError, match='Model_PAF.pkl: not found'):
    W.write_300wlp(tmp_path / 'x', 2, tmp_path / 'no_bfm')
  with pytest.raises(DaslError, match='n must be positive'):
    W.write_300wlp(tmp_path / 'x', 0, tmp_path)


# Every flag of the paper's flagfile is used as written except these (and why):
OVERRIDES = {
    # data paths: the tiny dataset instead of /data/3DDFA (the flagfile's comment
    # gives the same two flags for the real files)
    'data.dir_300wlp': None,  # filled in: ROOT/train_aug_120x120
    'data.landmarks_300wlp': None,  # filled in: ROOT/fan_landmarks_train_aug.txt
    # 2 steps instead of 3,976,566 (the last step is always logged and checkpointed,
    # so log_every / checkpoint_every / eval_every need no change)
    'train.num_steps': 2,
    # the held-out set is AFLW2000-3D: 2,000 ResNet-50 forwards at step 0 and at the
    # end, minutes on this CPU and not what this test is about
    'data.heldout': 'none',
}
# Not overridden: source_wild=aflw reads the 6,360 aflw-wild crops of $DASL_ASSETS.


@pytest.mark.slow
@needs_bfm
@requires_assets('aflw-wild', 'list.txt')
def test_paper_flagfile_runs_two_steps(tiny_300wlp, tmp_path):
  """ResNet-50, 4 channels, 8 + 8 crops, the full 2DASL step, 2 steps. Measured on the
  shared 2-core machine: 140 s wall at load average ~6.8, 49 s at ~4 (63 s user CPU),
  almost all of it XLA:CPU compiling the ResNet-50 train step; the network is not
  shrunk (the point is the recipe as written)."""
  root, paths = tiny_300wlp
  over = dict(OVERRIDES, **{'data.dir_300wlp': paths['dir_300wlp'],
                            'data.landmarks_300wlp': paths['landmarks']})
  wd = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'experiments.train', f'--flagfile={FLAGFILE}', f'--workdir={wd}',
         *(f'--config.{k}={v}' for k, v in over.items())]
  t0 = time.time()
  r = subprocess.run(cmd, cwd=REPO, env=env(cache_dir()), capture_output=True, text=True,
                     timeout=1200)
  wall = time.time() - t0
  assert r.returncode == 0, r.stderr[-3000:]
  print(f'paper recipe, 2 steps: {wall:.0f} s wall')
  flags = json.loads((wd / 'flags.json').read_text())
  assert flags['model']['arch'] == 'resnet' and flags['model']['depth'] == 50
  assert flags['model']['in_channels'] == 4 and flags['data']['source_3d'] == '300wlp'
  assert flags['data']['source_wild'] == 'aflw' and flags['optim']['name'] == 'sgd'
  recs = [json.loads(l) for l in (wd / 'log.jsonl').read_text().splitlines()[1:]]
  train = [x for x in recs if 'total' in x]
  assert train and train[-1]['step'] == 2
  for k in ('l3d', 'l2d_con', 'l3d_con', 'lcyc', 'lsc'):
    assert np.isfinite(train[-1][k]), k
  restored = checkpoint.restore(wd)
  assert restored.step == 2 and restored.model_config.depth == 50
  data = json.loads((wd / 'data.json').read_text())
  assert data['3d_rows'] == 16
