"""The wild labels' landmark scheme of a run (``config.data.wild_scheme``).

``ibug``: the labels are read as iBUG-68's points (2DASL's reading; no scheme).
``fit``: AFLW's 21 definitions, their offsets fitted (``face_model.schemes.fit``) on
the training crops of the aflw-wild source with the teacher's parameters (never
the validation crops). A path: a saved scheme (checked against the model).

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


def resolve(cfg, model68, wild, teacher: Optional[dict]):
  """The run's wild scheme.

  Args:
    cfg: ``config.data``; wild: the wild training source (after the validation split).
    teacher: ``{'names', 'params'}`` of the teacher-labelled pool, or None.
  Returns:
    (scheme21 or None, scheme18 or None): the 21-point scheme (validation) and the
    18 points of the 2D terms; (None, None) for ``ibug``.
  """
  kind = str(cfg.wild_scheme)
  if kind == 'ibug':
    return None, None
  if kind == 'fit':
    src, rows = _aflw_rows(wild)
    if src is None:
      raise DaslError('--config.data.wild_scheme=fit fits AFLW\'s 21 definitions: it needs '
                      '--config.data.source_wild=aflw (raw files, not TFDS)')
    if teacher is None:
      raise DaslError('--config.data.wild_scheme=fit needs the teacher\'s parameters of the '
                      'wild crops: --config.data.source_3d=teacher')
    where = {n: i for i, n in enumerate(teacher['names'])}
    rows = [int(r) for r in rows if src.names[r] in where]
    if not rows:
      raise DaslError('--config.data.wild_scheme=fit: no wild training crop has a teacher label')
    params = teacher['params'][[where[src.names[r]] for r in rows]]
    scheme = S.fit(S.aflw21(), params, src.pts21_crop[rows], src.vis21[rows], model68,
                   cfg.convention)
    print(S.format_fit(scheme), file=sys.stderr, flush=True)
  else:
    path = Path(kind)
    if not path.exists():
      raise DaslError(f'--config.data.wild_scheme={kind}: use ibug, fit or a scheme .json file '
                      '(file not found)')
    scheme = S.load(path, model68)
    if scheme.size not in (18, 21):
      raise DaslError(f'{path}: scheme {scheme.name} has {scheme.size} points; wild labels '
                      'have 21 (AFLW) or 18')
  if scheme.size == 21:
    return scheme, scheme.subset(lm.SEL18_FROM_AFLW21, f'{scheme.name}[18]')
  return None, scheme


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
