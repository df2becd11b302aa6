"""Landmark schemes: which point of the face model each 2D annotation names.

Datasets place their landmarks by their own definitions. AFLW's brow points sit on
the brow's centre line, its nose points on the nostril wings, its ear points on the
lobes; iBUG-68 (our landmarks, the start model's, the re-annotated AFLW2000-3D)
places brows on the upper edge and the nose points on the base of the nose. Fed to
the 2D terms "as the same points", AFLW labels teach AFLW's style. A scheme says
where each annotation lies on the morphable model, so the 2D terms compare like
with like:

    X_k(p) = sum_j C[k, j] L_j(p) + fR @ d_k        (camera space, before the y-flip)

``L`` are the model's 68 landmarks, ``C`` a fixed combination (rows sum to 1: a
point, or the mean of several), ``d_k`` a 3D offset in the model's own frame (so
it turns with the head: the same offset moves a point differently at every yaw),
``fR`` the pose's scaled rotation. The iBUG scheme is the identity (``d = 0``).
Offsets are fitted by least squares on training crops whose parameters a teacher
predicted (:func:`fit`), with left/right points mirrored into one another so a
scheme is symmetric like the faces it describes, and a flipped crop keeps its
definitions. A scheme is saved with a run (``scheme.json``) and names the
68-point model it was fitted with.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from dasl_jax.errors import DaslError
from dasl_jax.face_model import morphable_model as mm
from dasl_jax.geometry import camera
from dasl_jax.geometry import landmarks as lm
from dasl_jax.geometry import mirror as MIR
from dasl_jax.geometry import params as P

AFLW21_NAMES = ('left brow, left', 'left brow, centre', 'left brow, right',
                'right brow, left', 'right brow, centre', 'right brow, right',
                'left eye, left corner', 'left eye, centre', 'left eye, right corner',
                'right eye, left corner', 'right eye, centre', 'right eye, right corner',
                'left ear', 'nose, left', 'nose tip', 'nose, right', 'right ear',
                'mouth, left corner', 'mouth centre', 'mouth, right corner', 'chin')
# AFLW-21 under a horizontal flip: index k of the flipped face is point AFLW21_FLIP[k].
AFLW21_FLIP = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20)
SEL18_NAMES = tuple(AFLW21_NAMES[i] for i in lm.SEL18_FROM_AFLW21)
# The mirror of a model-frame offset: the BFM's left/right symmetry plane is
# normal to x (its 68 mean landmarks mirror to within 0.3% of the face size).
MIRROR = np.diag([-1.0, 1.0, 1.0])


@dataclasses.dataclass(frozen=True)
class LandmarkScheme:
  """K annotations as points of the morphable model.

  Attributes:
    name: e.g. ``ibug68``, ``aflw21``.
    combine: (K, 68) rows summing to 1 (which 68-point landmarks each annotation starts from).
    offsets: (K, 3) model-frame offsets (model units; zero for a definition that matches).
    point_names: K names.
    flip: (K,) mirror permutation of the annotations.
    model_key: digest of the 68-point model the offsets were fitted with ('' = any model).
    fit: what :func:`fit` measured (counts, errors before and after), or {}.
  """
  name: str
  combine: np.ndarray
  offsets: np.ndarray
  point_names: tuple
  flip: tuple
  model_key: str = ''
  fit: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    k = len(self.point_names)
    if self.combine.shape != (k, 68) or self.offsets.shape != (k, 3) or len(self.flip) != k:
      raise DaslError(f'scheme {self.name}: combine {self.combine.shape}, offsets '
                      f'{self.offsets.shape}, {len(self.flip)} flip entries for {k} points')

  @property
  def size(self) -> int:
    return len(self.point_names)

  @property
  def is_identity(self) -> bool:
    return not np.any(self.offsets)

  def subset(self, rows: Sequence[int], name: Optional[str] = None) -> 'LandmarkScheme':
    """The scheme of some of the annotations (e.g. AFLW's 21 -> 2DASL's 18)."""
    rows = [int(r) for r in rows]
    where = {r: i for i, r in enumerate(rows)}
    if any(self.flip[r] not in where for r in rows):
      raise DaslError(f'scheme {self.name}: a subset must hold each point with its mirror')
    fit = dict(self.fit)
    if 'points' in fit:
      fit['points'] = [fit['points'][r] for r in rows]
    return dataclasses.replace(
        self, name=name or f'{self.name}[{len(rows)}]', combine=self.combine[rows],
        offsets=self.offsets[rows], point_names=tuple(self.point_names[r] for r in rows),
        flip=tuple(where[self.flip[r]] for r in rows), fit=fit)

  def with_offsets(self, offsets, model_key='', fit=None) -> 'LandmarkScheme':
    return dataclasses.replace(self, offsets=np.asarray(offsets, np.float64),
                               model_key=model_key, fit=dict(fit or {}))

  # -- files -----------------------------------------------------------------
  def to_json(self) -> dict:
    return {'name': self.name, 'point_names': list(self.point_names),
            'combine': self.combine.tolist(), 'offsets': self.offsets.tolist(),
            'flip': list(self.flip), 'model_key': self.model_key, 'fit': self.fit}

  def save(self, path):
    from dasl_jax.io.files import write_text_atomic
    write_text_atomic(Path(path), json.dumps(self.to_json(), indent=1) + '\n')


def ibug68() -> LandmarkScheme:
  """The identity scheme of our own 68 landmarks."""
  return LandmarkScheme('ibug68', np.eye(68), np.zeros((68, 3)),
                        tuple(f'ibug {i}' for i in range(68)),
                        tuple(int(i) for i in MIR.FLIP68))


def ibug18() -> LandmarkScheme:
  """2DASL's 18 points as iBUG defines them (``landmarks.SEL18``): today's wild targets."""
  return LandmarkScheme('ibug18', lm.SEL18_MATRIX.astype(np.float64), np.zeros((18, 3)),
                        SEL18_NAMES, tuple(int(i) for i in MIR.FLIP18))


def aflw21(offsets=None) -> LandmarkScheme:
  """AFLW's 21 points from 3DDFA's 68 -> 21 mapping, plus ``offsets`` (default zero)."""
  return LandmarkScheme('aflw21', lm.AFLW21_MATRIX.astype(np.float64),
                        np.zeros((21, 3)) if offsets is None else np.asarray(offsets, np.float64),
                        AFLW21_NAMES, AFLW21_FLIP)


def model_key(model68) -> str:
  """Digest of a 68-point model's mean and bases (which model a scheme belongs to)."""
  h = hashlib.sha1()
  for a in (model68.u, model68.w_shp, model68.w_exp):
    h.update(np.ascontiguousarray(np.asarray(a, np.float32)).tobytes())
  return h.hexdigest()[:16]


def load(path, model68=None, size: Optional[int] = None) -> LandmarkScheme:
  """A scheme file (``LandmarkScheme.save``); checks it against a model and a point count.

  Raises:
    DaslError naming the file: unreadable, wrong fields, fitted with another model, or
    not ``size`` points.
  """
  path = Path(path)
  try:
    d = json.loads(path.read_text())
    s = LandmarkScheme(str(d['name']), np.asarray(d['combine'], np.float64),
                       np.asarray(d['offsets'], np.float64), tuple(d['point_names']),
                       tuple(int(i) for i in d['flip']), str(d.get('model_key', '')),
                       dict(d.get('fit', {})))
  except FileNotFoundError:
    raise DaslError(f'{path}: scheme file not found') from None
  except (ValueError, KeyError, TypeError) as e:
    raise DaslError(f'{path}: not a landmark scheme file ({type(e).__name__}: {e})') from None
  except DaslError as e:
    raise DaslError(f'{path}: {e}') from None
  if model68 is not None and s.model_key and s.model_key != model_key(model68):
    raise DaslError(f'{path}: scheme {s.name} was fitted with another face model '
                    f'(key {s.model_key}, this model {model_key(model68)}); refit it')
  if size is not None and s.size != size:
    raise DaslError(f'{path}: scheme {s.name} has {s.size} points, the labels {size}')
  return s


# ----------------------------------------------------------------------------
# The scheme's points of given parameters (pure, jittable).


def offsets_2d(fR, offsets):
  """Model-frame offsets in crop pixels: the y-flip of ``fR @ d``.

  Args:
    fR: (..., 3, 3) scaled rotations; offsets: (K, 3).
  Returns:
    (..., K, 2) pixel displacements (x right, y down).
  """
  d = jnp.einsum('...ij,kj->...ki', fR, jnp.asarray(offsets, fR.dtype))
  return jnp.stack([d[..., 0], -d[..., 1]], axis=-1)


def points2d(pts68_2d, fR, combine, offsets):
  """The scheme's K points in crop pixels from the 68 in crop pixels.

  The pixel map is affine and ``combine``'s rows sum to 1, so combining pixels
  equals projecting the combined 3D point.

  Args:
    pts68_2d: (..., 68, 2) crop pixels; fR: (..., 3, 3); combine: (K, 68); offsets: (K, 3).
  Returns:
    (..., K, 2).
  """
  base = jnp.einsum('kn,...nd->...kd', jnp.asarray(combine, pts68_2d.dtype), pts68_2d)
  return base + offsets_2d(fR, offsets)


def points2d_from_params(p, model68, scheme: LandmarkScheme, convention):
  """(..., 62) de-whitened parameters -> (..., K, 2) crop pixels of the scheme's points."""
  p = jnp.asarray(p, jnp.float32)
  fR = P.split(p)[0]
  l2 = camera.to_crop_pixels(mm.landmarks3d(model68, p), convention)
  return points2d(l2, fR, scheme.combine, scheme.offsets)


# ----------------------------------------------------------------------------
# Fitting the offsets.


def _pixel_jacobian(fR):
  """(N, 2, 3): d(crop pixels) / d(model-frame offset) = diag(1, -1) fR[:2]."""
  return np.asarray(fR, np.float64)[:, :2, :] * np.array([1.0, -1.0])[None, :, None]


def face_size(pts68_2d):
  """(N,) sqrt(w * h) of the 68 points' box (the NME normaliser)."""
  wh = pts68_2d.max(axis=1) - pts68_2d.min(axis=1)
  return np.sqrt(np.maximum(wh[:, 0] * wh[:, 1], 1e-12))


def fit(base: LandmarkScheme, params, labels, mask, model68, convention, *,
        symmetric=True, ridge=1e-3, huber=2.0, iters=5) -> LandmarkScheme:
  """Least-squares offsets of ``base``'s points from labelled crops with known parameters.

  For annotation k and crop i with pixel Jacobian ``A_i = diag(1, -1) fR_i[:2]``, the
  offset solves ``min_d sum_i w_ik ||A_i d - r_ik||^2 / s_i^2 + ridge * n_k ||d||^2 / S^2``
  with ``r_ik`` the label minus the base point (pixels), ``s_i`` the crop's face size
  (so every face counts alike), ``S`` the mean face's size in model units (the
  ridge keeps depth offsets of near-frontal points small: a 2D label only sees depth
  through yaw). ``symmetric`` ties each left/right pair (``base.flip``) by ``MIRROR``
  (a point that is its own mirror gets no x offset). ``huber`` > 0 reweights residuals
  beyond ``huber`` times their median absolute size (iteratively reweighted least
  squares, ``iters`` rounds), so a few mislabelled crops cannot pull an offset.

  Args:
    params: (N, 62) de-whitened parameters (the teacher's).
    labels: (N, K, 2) crop pixels; mask: (N, K) 1 where labelled.
    model68: the 68-point model; convention: pixel convention of labels and params.
  Returns:
    the fitted scheme; ``fit`` holds per point: n, NME (% of face size, mean over
    labelled crops) before and after, and the offsets in % of the mean face's size.
  """
  params = np.asarray(params, np.float64)
  labels = np.asarray(labels, np.float64)
  mask = np.asarray(mask, np.float64) > 0
  n, k = labels.shape[:2]
  if params.shape != (n, P.N_PARAMS) or mask.shape != (n, k) or k != base.size:
    raise DaslError(f'scheme fit: params {params.shape}, labels {labels.shape}, mask '
                    f'{mask.shape} for a {base.size}-point scheme')
  l68 = np.asarray(camera.to_crop_pixels(mm.landmarks3d(model68, jnp.asarray(params,
                                                                              jnp.float32)),
                                         convention), np.float64)
  A = _pixel_jacobian(params[:, :12].reshape(n, 3, 4)[:, :, :3])
  s = face_size(l68)
  res0 = labels - np.einsum('kn,ind->ikd', base.combine, l68)       # (N, K, 2)
  mean_size = float(face_size(np.asarray(model68.u, np.float64).reshape(1, 68, 3)[..., :2])[0])
  groups = []
  for j in range(k):
    m = base.flip[j]
    if not symmetric or m > j:
      groups.append((j, m))
    elif m == j:
      groups.append((j, j))
  offsets = np.zeros((k, 3))
  weights = mask.astype(np.float64)
  for _ in range(max(int(iters), 1) if huber > 0 else 1):
    for j, m in groups:
      members = [(j, np.eye(3))] + ([(m, MIRROR)] if symmetric and m != j else [])
      H, g, cnt = np.zeros((3, 3)), np.zeros(3), 0.0
      for q, T in members:
        w = weights[:, q] / s ** 2
        AT = A @ T                                                # (N, 2, 3)
        H += np.einsum('i,iab,iac->bc', w, AT, AT)
        g += np.einsum('i,iab,ia->b', w, AT, res0[:, q])
        cnt += float(mask[:, q].sum())
      H += ridge * max(cnt, 1.0) * np.eye(3) / mean_size ** 2
      if symmetric and m == j:
        # Its own mirror: x offset zero (solve in y, z only).
        d = np.zeros(3)
        d[1:] = np.linalg.solve(H[1:, 1:], g[1:]) if cnt else 0.0
      else:
        d = np.linalg.solve(H, g) if cnt else np.zeros(3)
      offsets[j] = d
      if symmetric and m != j:
        offsets[m] = MIRROR @ d
    if huber > 0:
      r = np.linalg.norm(res0 - np.einsum('iab,kb->ika', A, offsets), axis=-1) / s[:, None]
      med = np.array([np.median(r[mask[:, q], q]) if mask[:, q].any() else 1.0
                      for q in range(k)])
      c = huber * np.maximum(med, 1e-9)
      weights = mask * np.minimum(1.0, c[None] / np.maximum(r, 1e-12))
  after = res0 - np.einsum('iab,kb->ika', A, offsets)
  err0 = np.linalg.norm(res0, axis=-1) / s[:, None] * 100.0
  err1 = np.linalg.norm(after, axis=-1) / s[:, None] * 100.0
  per_point = []
  for q in range(k):
    v = mask[:, q]
    # Typical label-to-model disagreement after the fit (label noise plus the
    # teacher's error): the median squared distance scaled to a Gaussian's mean square.
    typical = (float(np.sqrt(np.median(err1[v, q] ** 2) / np.log(2.0)))
               if v.any() else float('nan'))
    per_point.append({'name': base.point_names[q], 'n': int(v.sum()),
                      'nme_before': float(err0[v, q].mean()) if v.any() else float('nan'),
                      'nme_after': float(err1[v, q].mean()) if v.any() else float('nan'),
                      'rms_after': typical,
                      'offset_pct': (offsets[q] / mean_size * 100.0).tolist()})
  info = {'crops': n, 'labelled_points': int(mask.sum()), 'symmetric': bool(symmetric),
          'ridge': ridge, 'huber': huber, 'mean_face_size': mean_size,
          'nme_before': float(err0[mask].mean()), 'nme_after': float(err1[mask].mean()),
          'points': per_point}
  return base.with_offsets(offsets, model_key(model68), info)


def noise_weights(scheme: LandmarkScheme, reference_weights, power=2):
  """Per-point weights on the squared error, inverse to each point's typical
  disagreement after the fit (``fit['points'][k]['rms_after']``), scaled so their mean
  equals that of ``reference_weights ** power`` (the loss keeps its overall size).

  Args:
    reference_weights: (K,) the weights they replace (2DASL's 18-point weights).
  Returns:
    (K,) float32.
  """
  pts = scheme.fit.get('points') if scheme.fit else None
  if not pts:
    raise DaslError(f'scheme {scheme.name} has no fit: noise weights need the fitted residuals '
                    '(--config.data.wild_scheme=fit)')
  r = np.array([p.get('rms_after', np.nan) for p in pts], np.float64)
  if not np.all(np.isfinite(r) & (r > 0)):
    raise DaslError(f'scheme {scheme.name}: a point without a fitted residual; cannot weight it')
  w = 1.0 / r ** 2
  ref = np.asarray(reference_weights, np.float64) ** power
  return (w * ref.mean() / w.mean()).astype(np.float32)


def format_fit(scheme: LandmarkScheme) -> str:
  """The fit as a table: per point, labelled crops, NME before / after, offset (% face)."""
  f = scheme.fit
  if not f:
    return f'scheme {scheme.name}: not fitted'
  rows = [f"scheme {scheme.name}: {f['crops']} crops, {f['labelled_points']} labelled points; "
          f"label-to-model NME {f['nme_before']:.2f}% -> {f['nme_after']:.2f}% after the fit",
          f"{'point':26s} {'n':>5s} {'before':>7s} {'after':>7s}   dx%   dy%   dz%"]
  for p in f['points']:
    dx, dy, dz = p['offset_pct']
    rows.append(f"{p['name']:26s} {p['n']:5d} {p['nme_before']:7.2f} {p['nme_after']:7.2f} "
                f"{dx:5.1f} {dy:5.1f} {dz:5.1f}")
  return '\n'.join(rows)
