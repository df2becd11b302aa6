"""The wild labels' landmark scheme of a run (``config.data.wild_scheme``).

``ibug``: the labels are read as iBUG-68's points (2DASL's reading; no scheme).
``fit``: AFLW's 21 definitions, their offsets fitted (``face_model.schemes.fit``) on
the training crops of the aflw-wild source with the teacher's parameters (never
the validation crops). A path: a saved scheme (checked against the model).
``config.data.val_scheme`` says the same of the validation NME (``auto``: the wild
labels' own 21-point scheme), so runs whose wild labels are already iBUG's (a 68-point
detector's) are still selected on AFLW's validation labels through AFLW's definitions.

With a scheme and teacher labels, the wild FLM channel can be drawn from the labels
moved into iBUG's definitions by the teacher's pose (``flm18``): the FLM a model
sees at test time comes from an iBUG-68 detector.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from dasl_jax.errors import DaslError
from dasl_jax.face_model import schemes as S
from dasl_jax.geometry import landmarks as lm


def _aflw_rows(wild):
  """(AflwWildSource, its row indices in use) of a wild source, or (None, None)."""
  from dasl_jax.data import readers as R
  from dasl_jax.data import teacher as T
  if isinstance(wild, T.NameSubset) and isinstance(wild.source, R.AflwWildSource):
    return wild.source, wild.source.rows[wild.index]
  if isinstance(wild, R.AflwWildSource):
    return wild, wild.rows
  return None, None


def fit_aflw(cfg, model68, teacher: Optional[dict], val_names, aflw_root):
  """AFLW's 21 definitions fitted on the aflw-wild crops outside the validation split,
  with the teacher's parameters. Prints the fit table."""
  from dasl_jax.data import readers as R
  if teacher is None:
    raise DaslError('fitting AFLW\'s definitions (--config.data.wild_scheme=fit or '
                    'val_scheme=fit) needs the teacher\'s parameters of the aflw-wild crops: '
                    '--config.data.source_3d=teacher')
  src = R.AflwWildSource(aflw_root, skip_bad_rows=True, tolerance=cfg.landmark_tolerance)
  where = {n: i for i, n in enumerate(teacher['names'])}
  rows = [int(r) for r in src.rows if src.names[r] not in val_names and src.names[r] in where]
  if not rows:
    raise DaslError(f'{aflw_root}: no aflw-wild training crop has a teacher label to fit '
                    'AFLW\'s definitions with')
  params = teacher['params'][[where[src.names[r]] for r in rows]]
  scheme = S.fit(S.aflw21(), params, src.pts21_crop[rows], src.vis21[rows], model68,
                 cfg.convention)
  print(S.format_fit(scheme), file=sys.stderr, flush=True)
  return scheme


def _load(value, model68, flag):
  path = Path(value)
  if not path.exists():
    raise DaslError(f'--config.data.{flag}={value}: use one of the names or a scheme .json '
                    'file (file not found)')
  scheme = S.load(path, model68)
  if scheme.size not in (18, 21):
    raise DaslError(f'{path}: scheme {scheme.name} has {scheme.size} points; wild labels '
                    'have 21 (AFLW) or 18')
  return scheme


def resolve(cfg, model68, wild, teacher: Optional[dict], val_names, aflw_root):
  """The run's schemes.

  Args:
    cfg: ``config.data``; wild: the wild training source (after the validation split).
    teacher: ``{'names', 'params'}`` of the teacher-labelled pool, or None.
    val_names: the validation crops (never fitted on); aflw_root: the aflw-wild folder.
  Returns:
    (scheme21 or None, scheme18 or None): the 21-point scheme the validation NME goes
    through, and the 18 points of the 2D terms (None: iBUG's own, as 2DASL reads labels).
  """
  cache = {}

  def fitted():
    if 'fit' not in cache:
      cache['fit'] = fit_aflw(cfg, model68, teacher, val_names, aflw_root)
    return cache['fit']

  kind = str(cfg.wild_scheme)
  if kind == 'ibug':
    train = None
  elif kind == 'fit':
    if _aflw_rows(wild)[0] is None:
      raise DaslError('--config.data.wild_scheme=fit fits AFLW\'s 21 definitions to AFLW '
                      'labels: it needs --config.data.source_wild=aflw (raw files, not TFDS)')
    train = fitted()
  else:
    train = _load(kind, model68, 'wild_scheme')
  vkind = str(cfg.val_scheme)
  if vkind == 'auto':
    val = train if train is not None and train.size == 21 else None
  elif vkind == 'none':
    val = None
  elif vkind == 'fit':
    val = fitted()
  else:
    val = _load(vkind, model68, 'val_scheme')
    if val.size != 21:
      raise DaslError(f'--config.data.val_scheme={vkind}: the validation labels are AFLW\'s 21 '
                      f'points; this scheme has {val.size}')
  if train is not None and train.size == 21:
    train = train.subset(lm.SEL18_FROM_AFLW21, f'{train.name}[18]')
  return val, train


def flm_points(wild, scheme18, teacher: dict, model68, convention):
  """Per-row FLM points of the wild source: the labels moved into iBUG's definitions.

  ``label - (scheme point - iBUG point)`` under the teacher's parameters; rows
  without a teacher label keep their labels. Returns (n_rows, 18, 2) float32 over
  the source's full row table (``AflwWildSource``), or None for other sources.
  """
  src, _ = _aflw_rows(wild)
  if src is None or scheme18 is None:
    return None
  out = src.points.copy()
  where = {n: i for i, n in enumerate(teacher['names'])}
  rows = [r for r in range(src.n_rows) if src.names[r] in where]
  if rows:
    p = teacher['params'][[where[src.names[r]] for r in rows]]
    moved = (np.asarray(S.points2d_from_params(p, model68, scheme18, convention))
             - np.asarray(S.points2d_from_params(p, model68, S.ibug18(), convention)))
    out[rows] = src.points[rows] - moved
  return np.where(src.mask[..., None] > 0, out, 0.0).astype(np.float32)
