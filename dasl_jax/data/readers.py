"""Random-access readers of the real datasets, in the batch format of ARCHITECTURE.md.

Each reader has ``__len__`` and ``__getitem__(i) -> dict`` of numpy arrays:
``image`` uint8 (120, 120, 3) BGR, ``points18`` float32 (18, 2) crop pixels,
``mask18`` float32 (18,); 3D-annotated readers add ``params`` float32 (62,)
whitened and ``lms68`` float32 (68, 2) crop pixels.

* :class:`TrainAugSource`: 3DDFA's ``train_aug_120x120`` layout (300W-LP);
* :class:`Aflw2000Source`: the AFLW2000-3D crops with the detector landmarks;
* :class:`AflwWildSource`: the aflw-wild crops (21 AFLW points in image pixels);
* :class:`WildFolderSource`: any folder of crops plus a landmark file.

Bad rows: cheap checks (missing image, missing or NaN label, landmarks far
outside the crop) run at construction; a JPEG that cannot be decoded is found
at read time. With ``skip_bad_rows=False`` each raises a :class:`DaslError`
naming the file and the row; with ``True`` bad rows are skipped and counted
(``skipped``; decode failures in ``read_errors``, per process) and an
undecodable row is replaced by the next good one, so reads stay deterministic.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np

from dasl_jax.geometry import camera
from dasl_jax.geometry import landmarks as LM
from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError
from dasl_jax.io.landmark_files import read_landmark_file

SIZE = camera.CROP_SIZE
# A decode failure is replaced by the next row; give up after this many in a row.
_MAX_REPLACEMENTS = 64


# ----------------------------------------------------------------------------
# Geometry helpers in numpy (pipelines run per example, off device).


class LandmarkModelNP:
  """A numpy copy of the 68-landmark model: ``u`` (204,), ``w`` (204, 50)."""

  def __init__(self, model):
    m = model.landmark_model()
    self.u = np.asarray(m.u, np.float64)
    self.w = np.concatenate([np.asarray(m.w_shp, np.float64),
                             np.asarray(m.w_exp, np.float64)], axis=1)

  def shape(self, alpha):
    """(..., 50) shape+expression coefficients -> (..., 68, 3) object points."""
    flat = self.u + np.einsum('vk,...k->...v', self.w, alpha)
    return flat.reshape(flat.shape[:-1] + (68, 3))


def lms68_from_params(model_np: LandmarkModelNP, p, convention):
  """(..., 62) de-whitened parameters -> (..., 68, 2) crop pixels (numpy twin of
  ``morphable_model.landmarks2d``)."""
  p = np.asarray(p, np.float64)
  fR, t, a_shp, a_exp = P.split(p)
  pts = model_np.shape(np.concatenate([a_shp, a_exp], -1))
  cam = np.einsum('...ij,...kj->...ki', fR, pts) + t[..., None, :]
  A, b = camera.pixel_affine_np(convention)
  return (cam[..., :2] @ A.T + b).astype(np.float32)


def points18(points, mask=None):
  """Landmarks of any supported scheme -> the 18 points and their mask.

  Args:
    points: (..., K, 2) with K in {68, 21, 18}; invisible points have x == -1
      unless ``mask`` is given.
    mask: optional (..., K) visibility.
  Returns:
    (..., 18, 2) float32 points, (..., 18) float32 mask (a mean of points is
    visible only when all its members are).
  """
  points = np.asarray(points, np.float32)
  k = points.shape[-2]
  if mask is None:
    mask = (points[..., 0] != -1).astype(np.float32)
  mask = np.asarray(mask, np.float32)
  if k == 68:
    pts = np.where(mask[..., None] > 0, points, 0.0)
    out = LM.select18_np(pts).astype(np.float32)
    member = (LM.SEL18_MATRIX > 0).astype(np.float32)
    m18 = (np.einsum('kn,...n->...k', member, 1.0 - mask) == 0).astype(np.float32)
  elif k == 21:
    out, m18 = LM.sel18_from_aflw21(points, mask)
  elif k == 18:
    out, m18 = points, mask
  else:
    raise ValueError(f'landmark scheme with {k} points: expected 68, 21 or 18')
  out = np.where(m18[..., None] > 0, out, 0.0).astype(np.float32)
  return out, np.asarray(m18, np.float32)


def points_outside(points, mask, tolerance, size=SIZE):
  """(N, K, 2), (N, K) -> (N,) bool: a visible point beyond ``tolerance * size``
  outside the crop, or a non-finite visible point."""
  lo, hi = -tolerance * size, size + tolerance * size
  vis = mask > 0
  bad_val = ~np.all(np.isfinite(points), axis=-1) | (points < lo).any(-1) | (points > hi).any(-1)
  return np.any(bad_val & vis, axis=-1)


# ----------------------------------------------------------------------------
# File readers.


def read_list(path):
  """A list file: one image name a line (blank lines ignored) -> list of str."""
  path = Path(path)
  if not path.exists():
    raise DaslError(f'{path}: list file not found')
  with open(path) as f:
    names = [line.strip() for line in f]
  names = [n for n in names if n]
  if not names:
    raise DaslError(f'{path}: list file is empty')
  return names


def load_labels(path):
  """(N, 62) parameter labels from 3DDFA's ``param_all_norm.pkl`` (a pickled
  array) or a ``.npy`` file."""
  path = Path(path)
  if not path.exists():
    raise DaslError(f'{path}: label file not found')
  try:
    if path.suffix == '.npy':
      a = np.load(path, allow_pickle=False)
    else:
      with open(path, 'rb') as f:
        a = pickle.load(f, encoding='latin1')
  except Exception as e:
    raise DaslError(f'{path}: cannot read labels ({type(e).__name__}: {e})') from None
  a = np.asarray(a, np.float32)
  if a.ndim != 2 or a.shape[1] != P.N_PARAMS:
    raise DaslError(f'{path}: labels must be (N, 62), got {a.shape}')
  return a


def decode_image(data, what):
  """JPEG/PNG bytes or a path -> (uint8 (120, 120, 3) BGR, (sx, sy) resize
  factors). Raises _BadRow when it cannot be decoded."""
  if isinstance(data, (str, Path)):
    img = cv2.imread(str(data), cv2.IMREAD_COLOR)
  else:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if img is None:
    raise _BadRow(f'{what}: cannot decode image')
  h, w = img.shape[:2]
  if (h, w) != (SIZE, SIZE):
    img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
  return img, np.array([SIZE / w, SIZE / h], np.float32)


class _BadRow(Exception):
  """Internal: a row that cannot be read (message names file and row)."""


# ----------------------------------------------------------------------------
# Base class: row bookkeeping, skipping and replacement.


class RowSource:
  """Random access over the good rows of a table of ``n_rows`` rows.

  Subclasses call :meth:`_init_rows` with a per-row list of problems found at
  construction and implement :meth:`_read` (row -> example, raising _BadRow).
  """
  name = 'rows'

  def _init_rows(self, problems, skip_bad_rows):
    """problems: dict row -> message (already naming the file and the row)."""
    self.skip_bad_rows = bool(skip_bad_rows)
    if problems and not self.skip_bad_rows:
      first = min(problems)
      flag = '--config.data.skip_bad_rows=True skips and counts them'
      more = (f' (and {len(problems) - 1} more bad rows; {flag})' if len(problems) > 1
              else f' ({flag})')
      raise DaslError(problems[first] + more)
    self.skipped = dict(sorted(problems.items()))
    good = np.setdiff1d(np.arange(self.n_rows), np.fromiter(problems, np.int64, len(problems)))
    if good.size == 0:
      raise DaslError(f'{self.name}: no readable rows left ({len(problems)} skipped)')
    self.rows = good.astype(np.int64)
    self.read_errors = 0
    self._bad_at_read = set()

  def __len__(self):
    return int(self.rows.size)

  def __getitem__(self, i):
    i = int(i)
    n = len(self)
    if i < 0 or i >= n:
      raise IndexError(f'{self.name}: index {i} outside 0..{n - 1}')
    for k in range(_MAX_REPLACEMENTS):
      j = (i + k) % n
      row = int(self.rows[j])
      if row in self._bad_at_read:
        continue
      try:
        return self._read(row)
      except _BadRow as e:
        if not self.skip_bad_rows:
          raise DaslError(f'{e} (skip_bad_rows=True skips such rows)') from None
        self._bad_at_read.add(row)
        self.read_errors += 1
    raise DaslError(f'{self.name}: {_MAX_REPLACEMENTS} unreadable rows in a row from index {i}')

  def _read(self, row):
    raise NotImplementedError

  def image_path(self, row):
    """Path of row ``row``'s image file."""
    return os.path.join(str(self.image_dir), self.names[row])

  def describe(self):
    return f'{self.name}: {len(self)} rows ({len(self.skipped)} skipped)'


def _missing_images(image_dir, names, list_path):
  """dict row -> message for names without a file."""
  out = {}
  for row, n in enumerate(names):
    if not os.path.isfile(os.path.join(image_dir, n)):
      out[row] = f'{list_path}: row {row} ({n}): image {os.path.join(image_dir, n)} not found'
  return out


def _add(problems, rows, message_fn):
  for r in np.flatnonzero(rows):
    problems.setdefault(int(r), message_fn(int(r)))


# ----------------------------------------------------------------------------
# (a) 3DDFA train_aug_120x120 (300W-LP).


class TrainAugSource(RowSource):
  """3DDFA's ``train_aug_120x120`` layout.

  Args:
    image_dir: folder of the 120x120 crops.
    list_file: image names, one a line; row i of the labels belongs to line i.
    params_file: ``param_all_norm.pkl`` (N, 62) labels whitened with ``stats``.
    stats: :class:`params.ParamStats` the labels are whitened with.
    model: a MorphableModel (its 68 landmarks give ``lms68``).
    convention: crop pixel convention of the labels ('v1' for 3DDFA v1 / 2DASL).
    landmark_file: optional detector landmarks for the FLM input
      (``name,x1,y1,...``, 68/21/18 points); without it the 18 points come from
      the ground-truth ``lms68`` (an optimistic FLM: say so in experiments).
    skip_bad_rows, tolerance: see the module docstring.
  """

  def __init__(self, image_dir, list_file, params_file, stats, model, convention='v1',
               landmark_file=None, skip_bad_rows=False, tolerance=0.5):
    self.image_dir = str(image_dir)
    self.list_file = str(list_file)
    self.name = self.list_file
    names = read_list(list_file)
    labels = load_labels(params_file)
    self.names = names
    self.n_rows = len(names)
    self.stats = stats
    self.convention = convention
    self.model_np = LandmarkModelNP(model)
    problems = _missing_images(self.image_dir, names, list_file)
    if labels.shape[0] < self.n_rows:
      for r in range(labels.shape[0], self.n_rows):
        problems.setdefault(r, f'{params_file}: row {r} ({names[r]}): no label '
                            f'(file has {labels.shape[0]} rows, list {self.n_rows})')
      labels = np.concatenate(
          [labels, np.full((self.n_rows - labels.shape[0], P.N_PARAMS), np.nan, np.float32)])
    self.labels = labels[:self.n_rows]
    nan = ~np.all(np.isfinite(self.labels), axis=1)
    _add(problems, nan, lambda r: f'{params_file}: row {r} ({names[r]}): label holds NaN or inf')
    self.points = None
    self.mask = None
    if landmark_file is not None:
      lm_names, pts = read_landmark_file(landmark_file)
      index = {n: k for k, n in enumerate(lm_names)}
      k = pts.shape[1]
      self.points = np.zeros((self.n_rows, k, 2), np.float32)
      have = np.zeros(self.n_rows, bool)
      for r, n in enumerate(names):
        j = index.get(n)
        if j is not None:
          self.points[r] = pts[j]
          have[r] = True
      _add(problems, ~have, lambda r: f'{landmark_file}: no landmarks for row {r} ({names[r]})')
      self.points, self.mask = points18(self.points)
      far = points_outside(self.points, self.mask, tolerance) & have
      _add(problems, far, lambda r: f'{landmark_file}: row {r} ({names[r]}): landmarks '
           f'more than {tolerance:g} x {SIZE} px outside the crop')
    else:
      # Check the ground-truth landmarks the FLM will use, in chunks.
      good = np.flatnonzero(~nan)
      far = np.zeros(self.n_rows, bool)
      for s in range(0, good.size, 65536):
        rows = good[s:s + 65536]
        lms = lms68_from_params(self.model_np, stats.dewhiten(self.labels[rows]), convention)
        far[rows] = points_outside(lms, np.ones(lms.shape[:2], np.float32), tolerance)
      _add(problems, far, lambda r: f'{params_file}: row {r} ({names[r]}): ground-truth '
           f'landmarks more than {tolerance:g} x {SIZE} px outside the crop')
    self.landmark_file = landmark_file
    self._init_rows(problems, skip_bad_rows)

  def _read(self, row):
    path = os.path.join(self.image_dir, self.names[row])
    img, scale = decode_image(path, f'{self.list_file}: row {row} ({path})')
    pw = self.labels[row]
    lms = lms68_from_params(self.model_np, self.stats.dewhiten(pw), self.convention) * scale
    if self.points is None:
      p18, m18 = points18(lms)
    else:
      p18, m18 = self.points[row] * scale, self.mask[row]
    return {'image': img, 'points18': p18.astype(np.float32), 'mask18': m18,
            'params': pw.astype(np.float32), 'lms68': lms.astype(np.float32)}


# ----------------------------------------------------------------------------
# (b) AFLW2000-3D crops with detector landmarks.


class Aflw2000Source(RowSource):
  """AFLW2000-3D crops: FLM points from the detector file, ``lms68`` from the
  ground truth mapped into the crop with the ROI box.

  Rows follow the detector file (1,998 images: 0-based 1081 and 1798 have no
  detection). ``index`` gives each row's position in ``AFLW2000-3D_crop.list``.

  Args:
    root: the ``aflw2000-3d`` folder.
    ground_truth: 'original' (pts68, 3 x 68) or 'reannotated'.
    landmark_file: default ``<root>/detect_testData_1998.txt``.
  """

  def __init__(self, root, ground_truth='original', landmark_file=None,
               skip_bad_rows=False, tolerance=0.5):
    root = Path(root)
    self.root = root
    self.image_dir = root / 'AFLW2000-3D_crop'
    crop_list = read_list(root / 'AFLW2000-3D_crop.list')
    landmark_file = Path(landmark_file or root / 'detect_testData_1998.txt')
    self.name = str(landmark_file)
    names, det = read_landmark_file(landmark_file)
    cfg = root / 'test.configs'
    gt_file = cfg / ('AFLW2000-3D.pts68.npy' if ground_truth == 'original'
                     else 'AFLW2000-3D-Reannotated.pts68.npy')
    if ground_truth not in ('original', 'reannotated'):
      raise DaslError(f'ground_truth must be original or reannotated, got {ground_truth!r}')
    for f in (gt_file, cfg / 'AFLW2000-3D_crop.roi_box.npy'):
      if not f.exists():
        raise DaslError(f'{f}: missing (AFLW2000-3D test.configs)')
    gt = np.load(gt_file)[:, :2].swapaxes(1, 2)  # (2000, 68, 2) image pixels
    roi = np.load(cfg / 'AFLW2000-3D_crop.roi_box.npy')
    where = {n: i for i, n in enumerate(crop_list)}
    missing = [n for n in names if n not in where]
    if missing:
      raise DaslError(f'{landmark_file}: {missing[0]} is not in AFLW2000-3D_crop.list')
    self.index = np.array([where[n] for n in names], np.int64)
    self.names = names
    self.n_rows = len(names)
    self.lms68 = np.asarray(camera.image_to_crop(gt[self.index], roi[self.index]), np.float32)
    self.points, self.mask = points18(det)
    problems = _missing_images(str(self.image_dir), names, landmark_file)
    far = points_outside(self.points, self.mask, tolerance)
    _add(problems, far, lambda r: f'{landmark_file}: row {r} ({names[r]}): landmarks more '
         f'than {tolerance:g} x {SIZE} px outside the crop')
    self._init_rows(problems, skip_bad_rows)

  def _read(self, row):
    path = self.image_dir / self.names[row]
    img, scale = decode_image(path, f'{self.name}: row {row} ({path})')
    return {'image': img, 'points18': self.points[row] * scale, 'mask18': self.mask[row],
            'lms68': self.lms68[row] * scale}


# ----------------------------------------------------------------------------
# (c), (d) in-the-wild crops with 2D landmarks only.


class _WildSource(RowSource):
  """Images plus per-row 18 points and mask in the pixels of crops of size
  ``frame`` (w, h); points are rescaled to 120x120 with their image, unless
  ``points_in_crop_frame`` (they were mapped to the 120 frame already)."""
  frame = (SIZE, SIZE)
  points_in_crop_frame = False

  def _setup(self, image_dir, names, pts18, mask18, list_path, skip_bad_rows, tolerance):
    self.image_dir = str(image_dir)
    self.names = list(names)
    self.n_rows = len(names)
    self.tolerance = tolerance
    self.points, self.mask = pts18.astype(np.float32), mask18.astype(np.float32)
    problems = _missing_images(self.image_dir, self.names, list_path)
    in120 = self.points * (SIZE / np.asarray(self.frame, np.float32))
    far = points_outside(in120, self.mask, tolerance)
    _add(problems, far, lambda r: f'{list_path}: row {r} ({self.names[r]}): landmarks more '
         f'than {tolerance:g} x crop size outside the crop')
    nothing = self.mask.sum(-1) == 0
    _add(problems, nothing,
         lambda r: f'{list_path}: row {r} ({self.names[r]}): no visible landmark')
    self._init_rows(problems, skip_bad_rows)

  def _read(self, row):
    path = os.path.join(self.image_dir, self.names[row])
    what = f'{self.name}: row {row} ({path})'
    img, scale = decode_image(path, what)
    if self.points_in_crop_frame:
      scale = np.ones(2, np.float32)
    p = self.points[row] * scale
    if tuple(SIZE / scale) != tuple(self.frame) and points_outside(
        p[None], self.mask[row][None], self.tolerance)[0]:
      raise _BadRow(f'{what}: landmarks outside the crop after resizing')
    p = np.where(self.mask[row][:, None] > 0, p, 0.0)
    out = {'image': img, 'points18': p.astype(np.float32), 'mask18': self.mask[row]}
    flm = getattr(self, 'flm_points', None)
    if flm is not None:  # the labels in iBUG's definitions (data/wild_scheme.py)
      out['flm18'] = (flm[row] * scale).astype(np.float32)
    return out


class AflwWildSource(_WildSource):
  """The aflw-wild crops: ``list.txt``, ``images/``, ``pts21.npy`` (N, 2, 21) in
  ORIGINAL image pixels (x == -1: invisible), ``roi_box.npy`` (N, 4).

  Points go to the 120 crop with ``camera.image_to_crop``, so they already
  match a crop resized to 120x120 whatever its stored size.
  """
  points_in_crop_frame = True

  def __init__(self, root, skip_bad_rows=False, tolerance=0.5):
    root = Path(root)
    self.name = str(root / 'list.txt')
    names = read_list(root / 'list.txt')
    for f in ('pts21.npy', 'roi_box.npy'):
      if not (root / f).exists():
        raise DaslError(f'{root / f}: missing (aflw-wild folder)')
    pts = np.load(root / 'pts21.npy')
    roi = np.load(root / 'roi_box.npy').astype(np.float32)
    if pts.shape[0] != len(names) or roi.shape[0] != len(names):
      raise DaslError(f'{root}: list.txt has {len(names)} names but pts21.npy '
                      f'{pts.shape[0]} rows and roi_box.npy {roi.shape[0]}')
    pts = pts.swapaxes(1, 2).astype(np.float32)  # (N, 21, 2) image pixels
    vis = (pts[..., 0] != -1).astype(np.float32)
    crop = np.asarray(camera.image_to_crop(pts, roi), np.float32)
    # Kept for validation on AFLW's own 21 points (the 18 drop ears and chin).
    self.pts21_crop, self.vis21 = crop, vis
    self.yaws = (np.load(root / 'yaws.npy').astype(np.float32) if (root / 'yaws.npy').exists()
                 else np.zeros(len(names), np.float32))
    p18, m18 = points18(crop, vis)
    self._setup(root / 'images', names, p18, m18, self.name, skip_bad_rows, tolerance)


class WildFolderSource(_WildSource):
  """A folder of face crops and a landmark file in the crops' pixels.

  The file is CSV or 3DDFA list style, ``name,x1,y1,...`` with 68, 21 or 18
  points (detected); x == -1 marks an invisible point. Crops of any square-ish
  size are resized to 120x120 and their points scaled with them.
  """

  def __init__(self, image_dir, landmark_file, skip_bad_rows=False, tolerance=0.5):
    self.name = str(landmark_file)
    names, pts = read_landmark_file(landmark_file)
    p18, m18 = points18(pts)
    self.frame = _first_image_size(image_dir, names)
    self._setup(image_dir, names, p18, m18, self.name, skip_bad_rows, tolerance)


def _first_image_size(image_dir, names):
  """(w, h) of the first decodable image (crops of one folder share a size)."""
  for n in names[:16]:
    img = cv2.imread(os.path.join(str(image_dir), n), cv2.IMREAD_COLOR)
    if img is not None:
      return (img.shape[1], img.shape[0])
  return (SIZE, SIZE)
