"""TFDS builders: prepare from local files (no TensorFlow needed), read back
without TensorFlow, records equal what the raw readers give."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dasl_jax.data import readers as R
from dasl_jax.data import tfds_builders as T
from dasl_jax.errors import DaslError
from tests.helpers import dataset_files

_READ = textwrap.dedent('''
  import json, sys
  import numpy as np
  from dasl_jax.data.tfds_builders import PreparedSource
  src = PreparedSource(sys.argv[1], sys.argv[2], split=sys.argv[3])
  out = {}
  for i in range(len(src)):
    row, name = src.source_row(i)
    ex = src[i]
    out[row] = dict(name=name, **{k: v.tolist() for k, v in ex.items()})
  assert 'tensorflow' not in sys.modules, 'reading imported TensorFlow'
  print(json.dumps(out))
''')


def _read_in_subprocess(name, data_dir, split='train'):
  """Read every record in a fresh interpreter and check TensorFlow stayed out."""
  r = subprocess.run([sys.executable, '-c', _READ, name, str(data_dir), split],
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  return {int(k): v for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


def _write_keypoints68(folder, model):
  folder.mkdir(parents=True)
  np.savetxt(folder / 'u_base.txt', np.asarray(model.u), fmt='%.9g')
  np.savetxt(folder / 'w_shp_base.txt', np.asarray(model.w_shp), fmt='%.9g')
  np.savetxt(folder / 'w_exp_base.txt', np.asarray(model.w_exp), fmt='%.9g')


def test_prepare_and_read_300wlp_layout(tmp_path):
  d = dataset_files.write_train_aug(tmp_path / 'lp', n=6)
  _write_keypoints68(tmp_path / 'bfm' / 'keypoints68', d['model'])
  T.prepare('300wlp', d['root'], tmp_path / 'tfds', bfm_dir=str(tmp_path / 'bfm'),
            landmark_file=str(d['landmark_file']))
  got = _read_in_subprocess('dasl_300wlp', tmp_path / 'tfds')
  raw = R.TrainAugSource(d['image_dir'], d['list_file'], d['params_file'], d['stats'],
                         d['model'], 'v1', landmark_file=d['landmark_file'])
  assert sorted(got) == list(range(6))
  for row, rec in got.items():
    assert rec['name'] == d['names'][row]
    ex = raw[row]
    for k in ('image', 'params', 'points18', 'mask18'):
      np.testing.assert_array_equal(np.asarray(rec[k], ex[k].dtype), ex[k])
    np.testing.assert_allclose(rec['lms68'], ex['lms68'], atol=1e-3)  # basis via text files
    # Stored JPEG bytes are the file's own (no re-encoding).
    np.testing.assert_array_equal(np.asarray(rec['image'], np.uint8), ex['image'])


def test_prepare_wild_folder_resizes_and_skips(tmp_path):
  d = dataset_files.write_wild_folder(tmp_path / 'w', n=5, k=21, size=240)
  (d['root'] / d['names'][2]).write_bytes(b'garbage, not an image')
  with pytest.raises(DaslError, match=r'row 2 .*cannot decode'):
    T.prepare('wild_folder', d['root'], tmp_path / 'tfds', landmark_file=str(d['landmark_file']))
  T.prepare('wild_folder', d['root'], tmp_path / 'tfds2', skip_bad_rows=True,
            landmark_file=str(d['landmark_file']))
  got = _read_in_subprocess('dasl_wild_folder', tmp_path / 'tfds2')
  assert sorted(got) == [0, 1, 3, 4]
  keep = [i for i in range(21) if i not in (12, 16, 20)]
  for row, rec in got.items():
    pts = d['points'][row][keep] * 0.5  # 240 px crops resized to 120
    m = np.asarray(rec['mask18']) > 0
    np.testing.assert_allclose(np.asarray(rec['points18'])[m], pts[m], atol=1e-3)
    assert np.asarray(rec['image']).shape == (120, 120, 3)


def test_missing_prepared_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(DaslError, match='prepare_data'):
    T.PreparedSource('dasl_aflw_wild', tmp_path)
