"""notebooks/analysis.ipynb runs top to bottom on a checkpoint the test trains itself."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / 'notebooks' / 'analysis.ipynb'


def _outputs(nb):
  text, images, errors = [], 0, []
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if out.get('output_type') == 'stream':
        text.append(out['text'])
      elif out.get('output_type') == 'error':
        errors.append(f"{out['ename']}: {out['evalue']}")
      elif 'image/png' in out.get('data', {}):
        images += 1
  return '\n'.join(text), images, errors


@pytest.mark.slow
def test_analysis_notebook_runs_on_tiny_training_run(tmp_path):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  workdir = tmp_path / 'tiny'
  # The tiny flagfile, cut to 2 steps (compiling the step is most of its time).
  subprocess.run([sys.executable, '-m', 'experiments.train',
                  '--flagfile=experiments/configs/tiny.flags', f'--workdir={workdir}',
                  '--config.train.num_steps=2', '--config.train.log_every=1',
                  '--config.train.eval_every=2', '--config.train.checkpoint_every=2'],
                 cwd=ROOT, check=True, capture_output=True, timeout=600)
  env = {'DASL_WORKDIR': str(workdir), 'DASL_MAX_IMAGES': '16'}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)  # the kernel inherits this process's environment
  try:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                            resources={'metadata': {'path': str(ROOT)}}).execute()
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  text, images, errors = _outputs(nb)
  assert not errors, errors
  assert f'checkpoint: {workdir}' in text
  assert 'synthetic held-out (16 faces)' in text and 'mean of bins' in text
  # CED + yaw bars, worst cases, training curves.
  assert images == 3, text
