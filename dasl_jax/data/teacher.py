"""A 3D-annotated source made of real face crops labelled by a frozen teacher.

2DASL's 3D side is 300W-LP with fitted 3DMM labels. Without it, fine-tuning a
released regressor on rendered faces pulls it away from photographs (AFLW2000-3D
+0.80 NME in the first ablation). A teacher (any model checkpoint, usually the
start model itself) labels a folder of real crops once, optionally averaging
its prediction on each crop with the mirrored prediction on the flipped crop;
those labels then anchor the student where the 2D in-the-wild terms do not
reach (shape, expression, depth), on the same kind of images the wild side uses.

* :func:`teacher_params`: run the teacher over crops (cached in an ``.npz``
  named by a hash of the teacher's weights, the image names and the options);
* :class:`TeacherSource`: a random-access source in the batch format of
  ``readers`` (``params`` whitened with the student's statistics, ``lms68``,
  and the 18 points of ``lms68`` as FLM input, all visible);
* :func:`validation_split`: the fixed split of a crop list into training and
  validation names that every source of a run shares.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dasl_jax.geometry import params as P
from dasl_jax.data import readers as R
from dasl_jax.errors import DaslError

SIZE = R.SIZE


def validation_split(names: Sequence[str], val_size: int, seed: int = 0):
  """Split names into (train_names, val_names): ``val_size`` names drawn with a
  fixed ``seed``, independent of the run's seed so every run and arm holds out
  the same crops. Order within each part follows ``names``."""
  names = list(names)
  if val_size < 0 or val_size >= len(names):
    raise DaslError(f'--config.data.val_size={val_size}: must be in 0..{len(names) - 1} '
                    f'for a list of {len(names)} crops')
  pick = np.zeros(len(names), bool)
  if val_size:
    pick[np.random.default_rng(seed).choice(len(names), val_size, replace=False)] = True
  return ([n for n, p in zip(names, pick) if not p], [n for n, p in zip(names, pick) if p])


def _digest(tree) -> str:
  h = hashlib.sha1()
  import jax
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return h.hexdigest()[:16]


def read_crops(image_dir, names) -> np.ndarray:
  """(N, 120, 120, 3) uint8 BGR crops (resized to 120 when stored at another size)."""
  out = np.zeros((len(names), SIZE, SIZE, 3), np.uint8)
  for i, n in enumerate(names):
    path = os.path.join(str(image_dir), n)
    try:
      out[i] = R.decode_image(path, f'teacher images: {path}')[0]
    except R._BadRow as e:
      raise DaslError(str(e)) from None
  return out


def teacher_params(checkpoint_dir, image_dir, names, landmark_model, mirror=True,
                   cache_dir: Optional[str] = None, batch_size=128, progress=True):
  """De-whitened (N, 62) parameters a teacher checkpoint predicts on crops.

  Args:
    checkpoint_dir: model work directory (``checkpoint.restore``).
    image_dir, names: the crops.
    landmark_model: 68-point morphable model (FLM bootstrap of 4-channel
      teachers; mirroring re-fits shape to the mirrored landmarks).
    mirror: average with the teacher's prediction on the flipped crop, mapped
      back through ``geometry.mirror`` (the prediction core's flip test-time
      averaging; halves left/right bias).
    cache_dir: folder for ``teacher_<hash>.npz``; '' or None = no cache.
  Returns:
    (N, 62) float32 in the teacher's pixel convention.
  """
  from dasl_jax.io import checkpoint
  from dasl_jax import inference
  restored = checkpoint.restore(checkpoint_dir)
  key = json.dumps({'weights': _digest(restored.variables), 'names': hashlib.sha1(
      '\n'.join(names).encode()).hexdigest(), 'mirror': bool(mirror),
      'convention': restored.model_config.convention}, sort_keys=True)
  cache = None
  if cache_dir:
    cache = Path(cache_dir) / f'teacher_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz'
    if cache.exists():
      with np.load(cache) as z:
        if str(z['key']) == key:
          return z['params'].astype(np.float32)
  print(f'teacher: labelling {len(names)} crops with {checkpoint_dir}'
        f"{' and their mirrors' if mirror else ''}", file=sys.stderr, flush=True)
  crops = read_crops(image_dir, names)
  predictor = inference.Predictor(restored, landmark_model, batch_size=batch_size,
                                  tta='flip' if mirror else 'none')
  p = predictor.predict_crops(crops)['params'].astype(np.float32)
  if cache is not None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix('.tmp.npz')
    np.savez(tmp, params=p, key=np.asarray(key), names=np.asarray(names))
    os.replace(tmp, cache)
  return p


class TeacherSource(R.RowSource):
  """Real crops with teacher labels, in the 3D-annotated batch format.

  Args:
    image_dir, names: the crops.
    params: (N, 62) de-whitened teacher parameters (:func:`teacher_params`).
    stats: the student's whitening (``params`` are whitened with it).
    model: 68-point morphable model (``lms68`` from the parameters).
    convention: crop pixel convention of the labels.
  """

  def __init__(self, image_dir, names, params, stats: P.ParamStats, model, convention,
               skip_bad_rows=False, tolerance=0.5):
    self.image_dir = str(image_dir)
    self.names = list(names)
    self.name = f'teacher labels of {self.image_dir}'
    self.n_rows = len(self.names)
    params = np.asarray(params, np.float32)
    if params.shape != (self.n_rows, P.N_PARAMS):
      raise DaslError(f'{self.name}: {params.shape[0]} teacher labels for {self.n_rows} crops')
    self.labels = stats.whiten(params).astype(np.float32)
    self.lms = R.lms68_from_params(R.LandmarkModelNP(model), params, convention)
    problems = R._missing_images(self.image_dir, self.names, self.name)
    bad = ~np.all(np.isfinite(self.labels), axis=1) | R.points_outside(
        self.lms, np.ones(self.lms.shape[:2], np.float32), tolerance)
    R._add(problems, bad, lambda r: f'{self.name}: row {r} ({self.names[r]}): teacher label '
           f'not finite or its landmarks more than {tolerance:g} x {SIZE} px outside the crop')
    self._init_rows(problems, skip_bad_rows)

  def _read(self, row):
    path = os.path.join(self.image_dir, self.names[row])
    # Labels were made on the crop resized to 120, so they are in that frame already.
    img, _ = R.decode_image(path, f'{self.name}: row {row} ({path})')
    lms = self.lms[row]
    p18, m18 = R.points18(lms)
    return {'image': img, 'points18': p18, 'mask18': m18,
            'params': self.labels[row], 'lms68': lms.astype(np.float32)}


class NameSubset:
  """The rows of a source whose image name is in ``keep`` (a set), in source order.

  Sources with ``names`` and ``rows`` (``readers.RowSource``) only.
  """

  def __init__(self, source, keep):
    self.source = source
    keep = set(keep)
    self.index = np.array([i for i, r in enumerate(source.rows) if source.names[r] in keep],
                          np.int64)
    if self.index.size == 0:
      raise DaslError(f'{source.name}: no rows left after the validation split')
    self.name = source.name
    self.skipped = getattr(source, 'skipped', {})

  def __len__(self):
    return int(self.index.size)

  def __getitem__(self, i):
    return self.source[int(self.index[int(i)])]

  def names_in_order(self):
    return [self.source.names[self.source.rows[j]] for j in self.index]
