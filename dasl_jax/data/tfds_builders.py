"""TFDS builders for the user's local files, and a TensorFlow-free reader of them.

A user prepares a dataset once from the files they have (the "manual dir")::

  python -m experiments.prepare_data --dataset aflw_wild \\
      --manual_dir ../shared/assets/aflw-wild --data_dir ~/tensorflow_datasets

which writes ArrayRecord files; training then reads them with random access
through ``tfds.data_source`` (:class:`PreparedSource`) without importing
TensorFlow. Building does not need TensorFlow either (tensorflow-datasets
4.9.10 writes array_record with numpy features on its own).

Datasets (name: manual dir layout):

* ``dasl_300wlp``: 3DDFA's layout, ``train_aug_120x120/`` and
  ``train.configs/`` (``train_aug_120x120.list.train``, ``param_all_norm.pkl``,
  optional ``param_whitening.pkl``); the 68-landmark model comes from
  ``bfm_dir``;
* ``dasl_aflw_wild``: the aflw-wild folder (``list.txt``, ``images/``, ``pts21.npy``,
  ``roi_box.npy``);
* ``dasl_aflw2000``: the aflw2000-3d folder (split ``test``);
* ``dasl_wild_folder``: a folder of crops plus ``landmark_file``.

Records keep the original JPEG bytes when the crop is 120x120 (otherwise the
resized crop as PNG), the example's arrays in the batch format, and ``row`` and
``name`` of the source file. Record order is TFDS's (hashed keys), not the list's.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds

from dasl_jax.face_model import morphable_model as MM
from dasl_jax.geometry import params as P
from dasl_jax.data import readers as R
from dasl_jax.errors import DaslError

_F = tfds.features


def _features(kind):
  f = {'image': _F.Tensor(shape=(), dtype=np.object_),   # encoded JPEG / PNG bytes
       'points18': _F.Tensor(shape=(18, 2), dtype=np.float32),
       'mask18': _F.Tensor(shape=(18,), dtype=np.float32),
       'row': _F.Scalar(dtype=np.int64),
       'name': _F.Text()}
  if kind in ('3d', 'test'):
    f['lms68'] = _F.Tensor(shape=(68, 2), dtype=np.float32)
  if kind == '3d':
    f['params'] = _F.Tensor(shape=(62,), dtype=np.float32)
  return _F.FeaturesDict(f)


def _encoded(path, example):
  """The file's bytes when it is a 120x120 image, else the reader's resized crop as PNG."""
  with open(path, 'rb') as f:
    data = f.read()
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if img is not None and img.shape[:2] == (R.SIZE, R.SIZE):
    return data
  return cv2.imencode('.png', example['image'])[1].tobytes()


class _Builder(tfds.core.GeneratorBasedBuilder):
  """Shared: a reader over the manual dir, one record per good row."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  KIND = 'wild'
  SPLIT = 'train'

  def __init__(self, *, skip_bad_rows=False, tolerance=0.5, reader_kwargs=None, **kwargs):
    self._skip_bad_rows = skip_bad_rows
    self._tolerance = tolerance
    self._reader_kwargs = dict(reader_kwargs or {})
    super().__init__(**kwargs)

  def _info(self):
    return self.dataset_info_from_configs(features=_features(self.KIND), description=self.__doc__)

  def _reader(self, manual_dir):
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    manual = Path(dl_manager.manual_dir)
    if not manual.exists():
      raise DaslError(f'--manual_dir {manual}: folder not found')
    return {self.SPLIT: self._generate_examples(manual)}

  def _generate_examples(self, manual):
    reader = self._reader(manual)
    for row in reader.rows:
      row = int(row)
      try:
        ex = reader._read(row)  # pylint: disable=protected-access
      except R._BadRow as e:  # pylint: disable=protected-access
        if self._skip_bad_rows:
          continue
        raise DaslError(f'{e} (--skip_bad_rows skips such rows)') from None
      path = reader.image_path(row)
      rec = {k: v for k, v in ex.items() if k != 'image'}
      rec.update(image=_encoded(path, ex), row=row, name=reader.names[row])
      yield row, rec


class DaslAflwWild(_Builder):
  """aflw-wild: AFLW crops with 18 of the 21 AFLW points (crop pixels) and visibility."""
  name = 'dasl_aflw_wild'
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Point --manual_dir at the aflw-wild folder: list.txt, '
                                  'images/, pts21.npy, roi_box.npy.')

  def _reader(self, manual):
    return R.AflwWildSource(manual, skip_bad_rows=self._skip_bad_rows, tolerance=self._tolerance)


class DaslAflw2000(_Builder):
  """AFLW2000-3D crops with detector 18 points (FLM) and ground-truth lms68 (crop pixels)."""
  name = 'dasl_aflw2000'
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Point --manual_dir at the aflw2000-3d folder: '
                                  'AFLW2000-3D_crop/, AFLW2000-3D_crop.list, test.configs/, '
                                  'detect_testData_1998.txt.')
  KIND = 'test'
  SPLIT = 'test'

  def _reader(self, manual):
    return R.Aflw2000Source(manual, skip_bad_rows=self._skip_bad_rows,
                            tolerance=self._tolerance, **self._reader_kwargs)


class DaslWildFolder(_Builder):
  """A folder of face crops with a landmark file (68, 21 or 18 points per line)."""
  name = 'dasl_wild_folder'
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Point --manual_dir at a folder of crops and pass '
                                  '--landmark_file (name,x1,y1,... per line).')

  def _reader(self, manual):
    lm = self._reader_kwargs.get('landmark_file')
    if not lm:
      raise DaslError('dasl_wild_folder needs --landmark_file')
    return R.WildFolderSource(manual, lm, skip_bad_rows=self._skip_bad_rows,
                              tolerance=self._tolerance)


class Dasl300wlp(_Builder):
  """300W-LP in 3DDFA's train_aug_120x120 layout: whitened 62-d params, lms68, the 18
  FLM points."""
  name = 'dasl_300wlp'
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Point --manual_dir at a folder with train_aug_120x120/ and '
                                  'train.configs/ (train_aug_120x120.list.train, '
                                  'param_all_norm.pkl, optional param_whitening.pkl); pass '
                                  '--bfm_dir with keypoints68/ and param_whitening.pkl.')
  KIND = '3d'

  def _reader(self, manual):
    kw = self._reader_kwargs
    configs = manual / 'train.configs'
    bfm = Path(kw['bfm_dir']) if kw.get('bfm_dir') else None
    stats_file = configs / 'param_whitening.pkl'
    if not stats_file.exists():
      if bfm is None:
        raise DaslError(f'{stats_file}: missing; pass --bfm_dir with param_whitening.pkl')
      stats_file = bfm / 'param_whitening.pkl'
    if bfm is None:
      raise DaslError('dasl_300wlp needs --bfm_dir (its keypoints68/ gives the landmarks)')
    model = MM.load(bfm / 'keypoints68' if (bfm / 'keypoints68').exists() else bfm)
    return R.TrainAugSource(
        manual / 'train_aug_120x120',
        kw.get('list_file') or configs / 'train_aug_120x120.list.train',
        kw.get('params_file') or configs / 'param_all_norm.pkl', P.load_param_stats(stats_file),
        model, kw.get('convention', 'v1'), landmark_file=kw.get('landmark_file') or None,
        skip_bad_rows=self._skip_bad_rows, tolerance=self._tolerance)


BUILDERS = {'300wlp': Dasl300wlp, 'aflw_wild': DaslAflwWild, 'aflw2000': DaslAflw2000,
            'wild_folder': DaslWildFolder}


def prepare(dataset, manual_dir, data_dir, skip_bad_rows=False, tolerance=0.5, **reader_kwargs):
  """Build one dataset into ``data_dir`` (ArrayRecord). Returns the builder."""
  if dataset not in BUILDERS:
    raise DaslError(f'--dataset {dataset!r}: use one of {sorted(BUILDERS)}')
  builder = BUILDERS[dataset](data_dir=str(data_dir), file_format='array_record',
                              skip_bad_rows=skip_bad_rows, tolerance=tolerance,
                              reader_kwargs=reader_kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder


# ----------------------------------------------------------------------------
# Reading (no TensorFlow).


class PreparedSource:
  """Random access to a prepared dataset: ``__getitem__`` -> example dict.

  Args:
    name: ``dasl_aflw_wild``, ``dasl_300wlp``, ``dasl_aflw2000``, ``dasl_wild_folder``.
    data_dir: the ``--data_dir`` it was prepared into.
    split: ``train`` (``test`` for dasl_aflw2000).
  """

  def __init__(self, name, data_dir, split='train'):
    folder = Path(data_dir) / name
    if not folder.exists():
      raise DaslError(f'{folder}: no prepared dataset; run python -m experiments.prepare_data '
                      f'--dataset {name.replace("dasl_", "")} --manual_dir ... '
                      f'--data_dir {data_dir}')
    try:
      self._ds = tfds.data_source(name, data_dir=str(data_dir), split=split)
    except Exception as e:  # tfds raises many types for a broken folder
      raise DaslError(f'{folder}: cannot open prepared dataset ({type(e).__name__}: {e})') from None
    self.name = f'{folder}[{split}]'
    self.skipped = {}

  def __len__(self):
    return len(self._ds)

  def __getitem__(self, i):
    r = self._ds[int(i)]
    img = cv2.imdecode(np.frombuffer(r['image'], np.uint8), cv2.IMREAD_COLOR)
    if img is None:
      raise DaslError(f'{self.name}: record {i} ({r["name"]}): cannot decode image')
    ex = {'image': img}
    for k in ('points18', 'mask18', 'params', 'lms68'):
      if k in r:
        ex[k] = np.asarray(r[k], np.float32)
    return ex

  def source_row(self, i):
    """(row, name) of record ``i`` in the files it was prepared from."""
    r = self._ds[int(i)]
    name = r['name']
    return int(r['row']), name.decode() if isinstance(name, bytes) else str(name)

  def describe(self):
    return f'{self.name}: {len(self)} rows'
