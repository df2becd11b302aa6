"""The morphable models a checkpoint is read with: a 68-landmark model and a
dense one with triangles (full BFM or the Model_PAF grid)."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from dasl_jax.face_model import morphable_model as mm
from dasl_jax.assets import asset
from dasl_jax.errors import DaslError

from dasl_jax.errors import warn


# ----------------------------------------------------------------------------
# Morphable models of a checkpoint.


@dataclasses.dataclass
class FaceModels:
  """``landmarks``: a 68-row model for the landmarks (exact basis rows);
  ``dense``: a model with triangles and colours for meshes, or None;
  ``kind``: 'bfm' or 'synthetic'; ``note``: how they were chosen."""
  landmarks: mm.MorphableModel
  dense: Optional[mm.MorphableModel]
  kind: str
  note: str = ''


def checkpoint_face_model(flags) -> str:
  """'synthetic' or 'bfm': which model a training run's flags say it learnt.

  Converted checkpoints (no flags) are 3DDFA / 3DDFA_V2 models, trained on the BFM.
  A ``--config.train.fake_data=True`` run learnt the BFM too, whatever
  ``data.source_3d`` says (the data flags are unused there): ``FakeData`` draws its
  labels with ``<assets>/bfm/keypoints68`` and its whitening (without the assets, a
  random model that no reader can rebuild; the BFM reader then warns that the folder
  is missing).
  """
  if not flags:
    return 'bfm'
  if _flag(flags, 'train', 'fake_data', False):
    return 'bfm'
  src = _flag(flags, 'data', 'source_3d', flags.get('source_3d', ''))
  return 'synthetic' if src == 'synthetic' else 'bfm'


def _flag(flags, section, name, default=''):
  """``--config.<section>.<name>`` from a run's flags.json (nested, or dotted keys)."""
  if not flags:
    return default
  group = flags.get(section, {}) if isinstance(flags.get(section), dict) else {}
  return group.get(name, flags.get(f'{section}.{name}', default))


def bfm_off_surface(paf_mean, bfm_mean, tol=0.01):
  """Grid vertices of Model_PAF farther than ``tol`` x face width from the BFM mesh.

  Args:
    paf_mean: (N, 3) Model_PAF mean; bfm_mean: (M, 3) BFM mean vertices.
  Returns:
    (N,) bool.
  """
  from scipy.spatial import cKDTree
  d, _ = cKDTree(bfm_mean).query(paf_mean)
  width = np.ptp(bfm_mean[:, 0])
  return d > tol * width


def _nearest_colors(points, ref_points, ref_colors):
  from scipy.spatial import cKDTree
  _, idx = cKDTree(ref_points).query(points)
  return ref_colors[idx]


def load_paf_dense(bfm_dir, landmark_model=None, shape_sim=None) -> mm.MorphableModel:
  """The 4,096-vertex ``Model_PAF.pkl`` grid as a mesh: triangles over the grid
  without the points that lie off the face surface, colours from the nearest
  full-BFM vertex's mean texture (``Model_Shape_Sim.mat``, when present). The
  one assembly of this mesh: overlays and the synthetic-BFM renderer use it.

  Args:
    landmark_model: the keypoints68 model (picks the grid's 68 landmark rows).
    shape_sim: ``mm.load_shape_sim_mat`` output if already loaded.
  """
  d = Path(bfm_dir)
  raw = mm._load_pickle(d / 'Model_PAF.pkl')
  paf_mean = np.asarray(raw['mu_filter'], np.float32).reshape(-1, 3)
  # The BFM mean face is u_shp + u_exp (Model_Shape_Sim's mu_shape lacks the
  # expression mean, and would flag half the grid as off the surface).
  bfm_mean = None
  if (d / 'u_shp.npy').exists() and (d / 'u_exp.npy').exists():
    bfm_mean = (mm._load_npy(d / 'u_shp.npy', 'mean shape') +
                mm._load_npy(d / 'u_exp.npy', 'mean expression')).reshape(-1, 3)
  off = bfm_off_surface(paf_mean, bfm_mean) if bfm_mean is not None else None
  dense = mm.load_model_paf(d / 'Model_PAF.pkl', reference=landmark_model, off_surface=off)
  if shape_sim is None and (d / 'Model_Shape_Sim.mat').exists():
    shape_sim = mm.load_shape_sim_mat(d / 'Model_Shape_Sim.mat')
  if (shape_sim is not None and 'tex' in shape_sim and bfm_mean is not None
      and len(bfm_mean) == len(shape_sim['tex'])):
    dense = dense.replace(colors=_nearest_colors(paf_mean, bfm_mean, shape_sim['tex']))
  return dense


# 3DDFA_V2's dense model file (in its configs/ folder, with tri.pkl beside it).
NONECK = 'bfm_noneck_v3.pkl'


def _noneck_models(path: Path) -> FaceModels:
  dense = mm.load_bfm_noneck(path)
  tri = ('' if dense.triangles is None
         else f', {len(dense.triangles)} triangles')
  if dense.triangles is None:
    warn(f'--bfm {path}: no triangles (no {mm.NONECK_TRI} beside it, no tri key): '
         'overlays show landmarks only and no meshes are written')
  note = f'dense: 3DDFA_V2 {path} ({dense.n_vertices} vertices{tri})'
  return FaceModels(dense.landmark_model(), dense if dense.triangles is not None else None,
                    'bfm', note)


@functools.lru_cache(maxsize=4)
def load_bfm_models(bfm_dir: str) -> FaceModels:
  """BFM models from a folder laid out like ``assets/bfm``, from 3DDFA_V2's
  ``configs/`` folder, or from its ``bfm_noneck_v3.pkl`` file.

  Landmarks: ``keypoints68/`` (the exact 68 basis rows). Dense: the full BFM
  when ``w_shp_sim.npy`` is there (triangles and colours from
  ``Model_Shape_Sim.mat``), else the 4,096-vertex ``Model_PAF.pkl`` grid with
  its off-surface grid points dropped and colours from the nearest BFM vertex.
  A ``bfm_noneck_v3.pkl`` (given as the file, or in the folder when none of the
  above is) is 3DDFA_V2's dense model (its 38,365 vertices, the triangles of
  ``tri.pkl`` beside it; no colours): landmarks are its keypoint rows.
  """
  d = Path(bfm_dir)
  if d.is_file():
    if d.suffix.lower() != '.pkl':
      raise DaslError(f'--bfm {d}: expected a folder or 3DDFA_V2\'s {NONECK} file')
    return _noneck_models(d)
  if not d.is_dir():
    raise DaslError(f'--bfm {d}: no such folder or file')
  if (d / 'keypoints68' / 'u_base.txt').exists():
    lms = mm.load_keypoints68(d / 'keypoints68')
  elif (d / 'u_base.txt').exists():
    lms = mm.load_keypoints68(d)
  else:
    lms = None
  if lms is None and not (d / 'w_shp_sim.npy').exists() and (d / NONECK).exists():
    return _noneck_models(d / NONECK)
  sim = d / 'Model_Shape_Sim.mat'
  simd = mm.load_shape_sim_mat(sim) if sim.exists() else None
  dense, note = None, ''
  if (d / 'w_shp_sim.npy').exists():
    dense = mm.load_3ddfa_configs(d)
    if simd is not None and len(simd['mean']) == dense.n_vertices:
      dense = dense.replace(triangles=simd['triangles'], colors=simd.get('tex'))
      note = f'dense: full BFM {d} ({dense.n_vertices} vertices)'
    else:
      note = f'dense: full BFM {d} without triangles (no matching Model_Shape_Sim.mat)'
  elif (d / 'Model_PAF.pkl').exists():
    dense = load_paf_dense(d, lms, simd)
    note = f'dense: Model_PAF.pkl ({dense.n_vertices} vertices, {len(dense.triangles)} triangles)'
  elif (d / NONECK).exists():
    nk = _noneck_models(d / NONECK)
    dense, note = nk.dense, nk.note
  if lms is None:
    if dense is None:
      raise DaslError(f'--bfm {d}: no morphable model here (need keypoints68/, '
                      f'w_shp_sim.npy, Model_PAF.pkl or {NONECK})')
    lms = dense.landmark_model()
  return FaceModels(lms, dense, 'bfm', note)


def face_models(restored, bfm_dir=None, kind=None) -> FaceModels:
  """The models to read a checkpoint's parameters with.

  ``--bfm DIR`` wins. Otherwise a synthetic-data run uses the built-in
  synthetic model, and a BFM-trained checkpoint uses ``<assets>/bfm`` (or its
  run's ``data.bfm_dir``) when present; else it warns and falls back to the
  synthetic model, whose coefficients mean something else. ``kind`` ('bfm' or
  'synthetic') stands in for the run's flags when there is no checkpoint (an
  exported ONNX file's metadata; ``restored`` may then be None).
  """
  flags = getattr(restored, 'flags', None)
  kind = kind or checkpoint_face_model(flags)
  if bfm_dir:
    m = load_bfm_models(str(Path(bfm_dir).expanduser().resolve()))
    if kind == 'synthetic':
      warn(f'--bfm {bfm_dir}: this checkpoint was trained on the synthetic face model; '
           'its shape coefficients mean something else in the BFM')
    return m
  if kind == 'bfm':
    cand = _flag(flags, 'data', 'bfm_dir') or str(asset('bfm'))
    if Path(cand).is_dir():
      return load_bfm_models(str(Path(cand).resolve()))
    warn('this checkpoint was trained on the BFM but no BFM folder was found '
         f'(looked at {cand}); pass --bfm DIR. Using the synthetic face model: '
         'landmarks and meshes will be wrong')
  from dasl_jax.face_model.synthetic import build_synthetic_model
  syn = build_synthetic_model()
  return FaceModels(syn.landmark_model(), syn, 'synthetic', 'built-in synthetic face model')


