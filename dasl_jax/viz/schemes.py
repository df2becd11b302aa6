"""Pictures of a landmark scheme: where a dataset's annotations sit on the mean face."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# iBUG-68 contours (0-based, inclusive ranges), drawn as the face's outline.
_CONTOURS = ((0, 16), (17, 21), (22, 26), (27, 30), (31, 35), (36, 41, True), (42, 47, True),
             (48, 59, True), (60, 67, True))


def plot_scheme(scheme, model68, path, dense=None, title=None):
  """Arrows from each annotation's base point (the iBUG points it is mapped from) to
  where the fitted scheme puts it, on the mean face, front and side views.

  Args:
    scheme: a fitted ``face_model.schemes.LandmarkScheme``.
    model68: the 68-point model (its mean ``u`` is drawn).
    dense: optional (N, 3) mean-face vertices drawn faintly behind.
  """
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  u = np.asarray(model68.u, np.float64).reshape(68, 3)
  base = scheme.combine @ u
  moved = base + scheme.offsets
  size = float(np.sqrt(np.prod(u.max(0)[:2] - u.min(0)[:2])))
  fig, axes = plt.subplots(1, 2, figsize=(11, 6.2), gridspec_kw={'width_ratios': [1.25, 1]})
  for ax, (i, j), name in ((axes[0], (0, 1), 'front (x right, y up)'),
                           (axes[1], (2, 1), 'side (z toward the camera, y up)')):
    if dense is not None:
      d = np.asarray(dense, np.float64)
      ax.scatter(d[::3, i] / size, d[::3, j] / size, s=1, c='0.88', lw=0, zorder=0)
    for c in _CONTOURS:
      idx = list(range(c[0], c[1] + 1)) + ([c[0]] if len(c) > 2 else [])
      ax.plot(u[idx, i] / size, u[idx, j] / size, c='0.55', lw=0.8, zorder=1)
    ax.scatter(u[:, i] / size, u[:, j] / size, s=6, c='0.4', zorder=2)
    ax.scatter(base[:, i] / size, base[:, j] / size, s=18, c='tab:blue', zorder=3,
               label='iBUG point(s) mapped to the annotation')
    ax.quiver(base[:, i] / size, base[:, j] / size, (moved - base)[:, i] / size,
              (moved - base)[:, j] / size, angles='xy', scale_units='xy', scale=1, color='tab:red',
              width=0.004, zorder=4, label='fitted offset (true size)')
    ax.scatter(moved[:, i] / size, moved[:, j] / size, s=14, c='tab:red', zorder=5)
    if i == 0:
      for k, name_k in enumerate(scheme.point_names):
        ax.annotate(str(k), (moved[k, i] / size, moved[k, j] / size), fontsize=6,
                    xytext=(3, 2), textcoords='offset points', color='tab:red')
    ax.set_aspect('equal')
    ax.set_title(name, fontsize=9)
    ax.set_xlabel('fraction of the face size')
    ax.grid(alpha=0.2)
  axes[0].legend(fontsize=7, loc='lower left')
  fit = scheme.fit or {}
  sub = (f"label-to-model NME {fit['nme_before']:.2f}% -> {fit['nme_after']:.2f}% on "
         f"{fit['crops']} training crops" if 'nme_before' in fit else '')
  fig.suptitle((title or f'{scheme.name}: where the annotations sit on the mean face')
               + (f'\n{sub}' if sub else ''), fontsize=10)
  fig.tight_layout()
  fig.savefig(Path(path), dpi=110)
  plt.close(fig)
  return Path(path)
