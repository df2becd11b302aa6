"""The AFLW2000-3D test folder (3DDFA's layout), checked on load.

Folder layout (see the assets README)::

  AFLW2000-3D_crop/*.jpg                    2,000 crops, 120x120
  AFLW2000-3D_crop.list                     their order
  test.configs/AFLW2000-3D.pts68.npy        (2000, 3, 68) original GT (image px)
  test.configs/AFLW2000-3D-Reannotated.pts68.npy  (2000, 2, 68)
  test.configs/AFLW2000-3D_crop.roi_box.npy (2000, 4) sx, sy, ex, ey
  test.configs/AFLW2000-3D.pose.npy         (2000,) yaw degrees
  test.configs/AFLW2000-3D-new.pose.npy     (2000,) yaw degrees (optional, --yaw_file new)
  detect_testData_1998.txt                  name.jpg,x1,y1,...,x68,y68 (crop px)
  originals/imageNNNNN.mat                  (optional) fitted pose etc.

Arrays are returned coordinates-last: (N, 68, 2).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from dasl_jax.errors import DaslError
from dasl_jax.io.landmark_files import read_landmark_file

CROP_DIR = 'AFLW2000-3D_crop'
LIST = 'AFLW2000-3D_crop.list'
PTS68 = 'test.configs/AFLW2000-3D.pts68.npy'
REANNOTATED = 'test.configs/AFLW2000-3D-Reannotated.pts68.npy'
ROI_BOX = 'test.configs/AFLW2000-3D_crop.roi_box.npy'
POSE = 'test.configs/AFLW2000-3D.pose.npy'
# The second yaw file some papers bin by (1306 / 462 / 232 images per bin,
# against 1312 / 383 / 305 for POSE).
NEW_POSE = 'test.configs/AFLW2000-3D-new.pose.npy'
YAW_FILES = {'default': POSE, 'new': NEW_POSE}
DETECTIONS = 'detect_testData_1998.txt'
ORIGINALS = 'originals'
# All 2,000 original images with their fitting .mat files (full-image benchmarks, pose).
FULL_IMAGES = 'AFLW2000'
# 2DASL's benchmark drops these (0-based) because its detector found no face.
DROPPED_1998 = (1081, 1798)


@dataclasses.dataclass
class AFLW2000:
  """AFLW2000-3D annotations, all in list order.

  names: N file names; roi_boxes (N, 4); pts68 (N, 68, 2) original GT, image
  pixels; reannotated (N, 68, 2) or None; yaws (N,) degrees; detector68
  (N, 68, 2) crop-pixel detector landmarks, NaN where the file has none;
  has_detection (N,) bool; pts68_3d (N, 68, 3) original GT with its z (or
  None when the file holds only x, y); new_yaws (N,) of NEW_POSE or None.
  """
  root: Path
  names: List[str]
  roi_boxes: np.ndarray
  pts68: np.ndarray
  reannotated: Optional[np.ndarray]
  yaws: np.ndarray
  detector68: Optional[np.ndarray]
  has_detection: np.ndarray
  pts68_3d: Optional[np.ndarray] = None
  new_yaws: Optional[np.ndarray] = None

  def __len__(self):
    return len(self.names)

  def yaws_of(self, yaw_file: str = 'default') -> np.ndarray:
    """(N,) yaw degrees from ``YAW_FILES[yaw_file]`` ('default' or 'new')."""
    if yaw_file not in YAW_FILES:
      raise DaslError(f'--yaw_file must be one of {", ".join(YAW_FILES)}, got {yaw_file!r}')
    if yaw_file == 'default':
      return self.yaws
    if self.new_yaws is None:
      raise DaslError(f'{self.root / NEW_POSE}: missing (needed by --yaw_file new)')
    return self.new_yaws

  def index_of(self, names, source='--names') -> np.ndarray:
    """File names -> (M,) indices into the list; unknown names are one error line."""
    pos = {n: i for i, n in enumerate(self.names)}
    bad = [n for n in names if n not in pos]
    if bad:
      raise DaslError(f'{source}: {len(bad)} names are not in {self.root / LIST} '
                      f'(first: {bad[:3]})')
    return np.asarray([pos[n] for n in names], np.int64)

  def subset_indices(self, subset: int) -> np.ndarray:
    """Indices of the 2000 images or of the 1998-image subset of 2DASL."""
    return subset_indices(len(self), subset)

  def crop_path(self, i: int) -> Path:
    return self.root / CROP_DIR / self.names[i]

  def load_crops(self, indices) -> np.ndarray:
    """(b,) indices -> (b, 120, 120, 3) uint8 BGR (cv2.imread, as 3DDFA_V2)."""
    return np.stack([load_crop(self.crop_path(int(i))) for i in indices])


def subset_indices(n: int, subset: int) -> np.ndarray:
  if subset == 2000:
    return np.arange(n)
  if subset == 1998:
    if n != 2000:
      raise DaslError(f'the 1998-image subset needs the 2000-image list, got {n} images')
    return np.setdiff1d(np.arange(n), DROPPED_1998)
  raise DaslError(f'--subset must be 1998 or 2000, got {subset}')


def load_crop(path) -> np.ndarray:
  """One crop: (120, 120, 3) uint8 BGR. DaslError if missing, unreadable or not 120x120."""
  path = Path(path)
  if not path.exists():
    raise DaslError(f'{path}: crop image not found')
  img = cv2.imread(str(path), cv2.IMREAD_COLOR)
  if img is None:
    raise DaslError(f'{path}: unreadable image (not a valid JPEG/PNG?)')
  if img.shape != (120, 120, 3):
    raise DaslError(f'{path}: crop must be 120x120 pixels, got {img.shape[1]}x{img.shape[0]}')
  return img


def _npy(root: Path, rel: str, n: int, shapes, required=True, what='AFLW2000-3D test.configs',
         list_name=LIST):
  path = root / rel
  if not path.exists():
    if required:
      raise DaslError(f'{path}: missing ({what})')
    return None
  try:
    a = np.load(path, allow_pickle=False)
  except Exception as e:
    raise DaslError(f'{path}: cannot read .npy ({type(e).__name__}: {e})') from None
  if a.shape[:1] != (n,):
    raise DaslError(f'{path}: has {a.shape[0] if a.ndim else 0} rows but {list_name} lists '
                    f'{n} images')
  if a.shape[1:] not in shapes:
    raise DaslError(f'{path}: expected shape (N, {shapes[0]}), got {a.shape}')
  return a


def read_detections(path, names: List[str]):
  """``detect_testData_1998.txt`` -> (N, 68, 2) crop pixels (NaN rows where absent), (N,) bool."""
  index = {n: i for i, n in enumerate(names)}
  out = np.full((len(names), 68, 2), np.nan, np.float32)
  seen = np.zeros(len(names), bool)
  found, pts = read_landmark_file(path, expected_k=68)
  for row, (name, xy) in enumerate(zip(found, pts), 1):
    if name not in index:
      raise DaslError(f'{path}: entry {row} names {name}, which is not in {LIST}')
    out[index[name]] = xy
    seen[index[name]] = True
  return out, seen


def load(root) -> AFLW2000:
  """Load and check the AFLW2000-3D folder (crops are read lazily)."""
  root = Path(root).expanduser()
  if not root.is_dir():
    raise DaslError(f'{root}: AFLW2000-3D folder not found (--aflw2000_dir)')
  lst = root / LIST
  if not lst.exists():
    raise DaslError(f'{lst}: missing (the list of crops)')
  names = [s.strip() for s in lst.read_text().splitlines() if s.strip()]
  n = len(names)
  if n == 0:
    raise DaslError(f'{lst}: empty')
  pts = _npy(root, PTS68, n, [(3, 68), (2, 68)])
  rea = _npy(root, REANNOTATED, n, [(2, 68), (3, 68)], required=False)
  roi = _npy(root, ROI_BOX, n, [(4,)])
  yaw = _npy(root, POSE, n, [()])
  new_yaw = _npy(root, NEW_POSE, n, [()], required=False)
  det_path = root / DETECTIONS
  if det_path.exists():
    det, seen = read_detections(det_path, names)
  else:
    det, seen = None, np.zeros(n, bool)
  return AFLW2000(
      root=root, names=names, roi_boxes=roi.astype(np.float32),
      pts68=np.swapaxes(pts[:, :2], 1, 2).astype(np.float32),
      reannotated=None if rea is None else np.swapaxes(rea[:, :2], 1, 2).astype(np.float32),
      yaws=yaw.astype(np.float32), detector68=det, has_detection=seen,
      pts68_3d=np.swapaxes(pts, 1, 2).astype(np.float32) if pts.shape[1] == 3 else None,
      new_yaws=None if new_yaw is None else new_yaw.astype(np.float32))


def load_original_poses(root, names: List[str]):
  """Head pose of the images with a fitting ``.mat`` (``Pose_Para``): all 2,000 in
  ``AFLW2000/`` when that folder is there, else the 100 in ``originals/``.

  ``Pose_Para`` is [pitch, yaw, roll, tx, ty, tz, scale] in radians, fitted by
  AFLW2000-3D. Returned as degrees in the order (yaw, pitch, roll) with signs
  as the .mat stores them; :mod:`dasl_jax.evaluation` documents the sign
  relation to :func:`dasl_jax.geometry.camera.pose_angles`.

  Returns:
    indices (M,) into ``names``, angles (M, 3) degrees yaw, pitch, roll.
  """
  import scipy.io
  folder = Path(root) / FULL_IMAGES
  if not folder.is_dir() or not any(folder.glob('*.mat')):
    folder = Path(root) / ORIGINALS
  index = {n: i for i, n in enumerate(names)}
  idx, ang = [], []
  if not folder.is_dir():
    return np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
  for mat in sorted(folder.glob('*.mat')):
    name = mat.stem + '.jpg'
    if name not in index:
      continue
    try:
      pose = np.asarray(scipy.io.loadmat(str(mat))['Pose_Para'], np.float64).reshape(-1)
    except Exception as e:
      raise DaslError(f'{mat}: cannot read Pose_Para ({type(e).__name__}: {e})') from None
    pitch, yaw, roll = np.rad2deg(pose[:3])
    idx.append(index[name])
    ang.append((yaw, pitch, roll))
  return np.asarray(idx, np.int64), np.asarray(ang, np.float32).reshape(-1, 3)


# ----------------------------------------------------------------------------
# The AFLW 21-point benchmark (aflw-wild layout).


@dataclasses.dataclass
class AFLW21:
  """An AFLW 21-point set: names, pts21 (N, 21, 2) ORIGINAL-image pixels,
  visible (N, 21) bool (x == -1 in the file), yaws (N,), roi_boxes (N, 4)."""
  root: Path
  names: List[str]
  pts21: np.ndarray
  visible: np.ndarray
  yaws: np.ndarray
  roi_boxes: np.ndarray

  def __len__(self):
    return len(self.names)

  def load_crops(self, indices) -> np.ndarray:
    """(b,) indices -> (b, 120, 120, 3) uint8 BGR; crops of another size are resized
    to 120 (the ROI box maps image points to the 120 frame whatever the stored size)."""
    out = []
    for i in indices:
      path = self.root / 'images' / self.names[int(i)]
      img = cv2.imread(str(path), cv2.IMREAD_COLOR)
      if img is None:
        raise DaslError(f'{path}: missing or unreadable image')
      if img.shape[:2] != (120, 120):
        img = cv2.resize(img, (120, 120), interpolation=cv2.INTER_AREA)
      out.append(img)
    return np.stack(out)


def load_aflw21(root) -> AFLW21:
  """Load and check a folder with the aflw-wild layout (see the assets README)."""
  root = Path(root)
  if not (root / 'list.txt').exists():
    raise DaslError(f'{root}: no list.txt (an AFLW 21-point folder holds list.txt, images/, '
                    'pts21.npy, yaws.npy, roi_box.npy)')
  names = [l.strip() for l in (root / 'list.txt').read_text().splitlines() if l.strip()]
  n = len(names)
  kw = dict(what='AFLW 21-point folder', list_name='list.txt')
  pts = _npy(root, 'pts21.npy', n, [(2, 21)], **kw)
  yaws = _npy(root, 'yaws.npy', n, [()], **kw)
  roi = _npy(root, 'roi_box.npy', n, [(4,)], **kw)
  pts = np.swapaxes(pts, 1, 2).astype(np.float64)
  visible = pts[..., 0] != -1
  if not visible.any(axis=1).all():
    bad = np.flatnonzero(~visible.any(axis=1))[:5].tolist()
    raise DaslError(f'{root / "pts21.npy"}: rows {bad} have no visible point')
  return AFLW21(root, names, pts, visible, yaws.astype(np.float64), roi.astype(np.float64))
