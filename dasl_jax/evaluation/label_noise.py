"""How noisy are 2D labels? Three estimates of the same points, each error separated.

With three estimates A, T, D of the same point on many faces and independent
errors, the spread of each pairwise difference is the sum of two error variances:
``V_AT = s_A^2 + s_T^2``, ``V_AD = s_A^2 + s_D^2``, ``V_TD = s_T^2 + s_D^2``, so
``s_A^2 = (V_AT + V_AD - V_TD) / 2`` and likewise for the others (the "three-cornered
hat" of clock comparisons). Here A is the hand label (AFLW), T the teacher's point
through the labels' scheme, D a second labeller's (dlib's iBUG-68 points through the
same scheme). Each difference is centred per point first: a constant offset between
two definitions is not noise. No ground truth of the test set is read.

Variances are robust (median-based, scaled to a Gaussian's): the typical error,
not that of the few grossly wrong labels, which :func:`outlier_rate` counts.

Errors that are not independent (teacher and dlib both learnt iBUG-68 from
300-W-like faces and may fail alike on profiles) make ``s_T`` and ``s_D`` look
smaller and ``s_A`` larger; the numbers are estimates under that assumption.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from dasl_jax.errors import DaslError

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.01))


# For a 2D isotropic Gaussian the squared length is sigma^2 chi^2(2): its median is
# 2 ln 2 sigma^2, its mean 2 sigma^2.
_MEDIAN_TO_MEAN = 1.0 / np.log(2.0)


def _centred_ms(diff, mask):
  """Robust mean squared 2D length of per-point-centred differences.

  Hand labels and detectors fail grossly on a few faces (swapped sides, a point on
  the wrong feature); a plain mean square measures those few. The median centre and
  the median squared length (scaled to a Gaussian's mean square) measure the typical
  error. diff (N, 2), mask (N,).
  """
  if mask.sum() < 3:
    return float('nan')
  d = diff[mask]
  d = d - np.median(d, axis=0)
  return float(np.median(np.sum(d ** 2, axis=-1)) * _MEDIAN_TO_MEAN)


def three_cornered_hat(a, t, d, mask, face_size):
  """Per point, each estimate's RMS 2D error in percent of the face size.

  Args:
    a, t, d: (N, K, 2) three estimates of K points (crop pixels).
    mask: (N, K) where all three exist (label visible).
    face_size: (N,) per-crop normaliser (pixels).
  Returns:
    dict of (K,) arrays ``a``, ``t``, ``d`` (RMS error, %; NaN where a variance came out
    negative or too few crops) and ``n`` (crops per point), and ``v_at``, ``v_ad``,
    ``v_td`` (pairwise centred mean squares, %^2).
  """
  a, t, d = (np.asarray(x, np.float64) / np.asarray(face_size, np.float64)[:, None, None] * 100
             for x in (a, t, d))
  mask = np.asarray(mask, bool)
  if not (a.shape == t.shape == d.shape) or mask.shape != a.shape[:2]:
    raise DaslError(f'label noise: shapes {a.shape}, {t.shape}, {d.shape}, mask {mask.shape}')
  k = a.shape[1]
  out = {x: np.full(k, np.nan) for x in ('a', 't', 'd', 'v_at', 'v_ad', 'v_td')}
  out['n'] = mask.sum(axis=0)
  for j in range(k):
    m = mask[:, j]
    v_at = _centred_ms(a[:, j] - t[:, j], m)
    v_ad = _centred_ms(a[:, j] - d[:, j], m)
    v_td = _centred_ms(t[:, j] - d[:, j], m)
    out['v_at'][j], out['v_ad'][j], out['v_td'][j] = v_at, v_ad, v_td
    for key, var in (('a', (v_at + v_ad - v_td) / 2), ('t', (v_at + v_td - v_ad) / 2),
                     ('d', (v_ad + v_td - v_at) / 2)):
      out[key][j] = np.sqrt(var) if var >= 0 else np.nan
  return out


def by_yaw(a, t, d, mask, face_size, yaws, bins: Sequence = YAW_BINS) -> Dict[str, dict]:
  """:func:`three_cornered_hat` over all points pooled, per |yaw| bin (and 'all').

  Pools every point's centred differences (each point centred on its own), so a bin's
  figure is one RMS per estimate.
  """
  yaws = np.abs(np.asarray(yaws, np.float64))
  out = {}
  for name, sel in [('all', np.ones(len(yaws), bool))] + [
      (f'{lo:g}-{min(hi, 90):g}', (yaws >= lo) & (yaws < hi)) for lo, hi in bins]:
    m = np.asarray(mask, bool) & sel[:, None]
    r = three_cornered_hat(a, t, d, m, face_size)
    w = r['n'].astype(np.float64)
    pooled = {}
    for key in ('v_at', 'v_ad', 'v_td'):
      v = r[key]
      ok = np.isfinite(v) & (w > 0)
      pooled[key] = float(np.sum(v[ok] * w[ok]) / max(np.sum(w[ok]), 1.0))
    s = {'a': (pooled['v_at'] + pooled['v_ad'] - pooled['v_td']) / 2,
         't': (pooled['v_at'] + pooled['v_td'] - pooled['v_ad']) / 2,
         'd': (pooled['v_ad'] + pooled['v_td'] - pooled['v_at']) / 2}
    out[name] = {'crops': int(sel.sum()), 'points': int(m.sum()),
                 **{k: (float(np.sqrt(v)) if v >= 0 else float('nan')) for k, v in s.items()}}
  return out
