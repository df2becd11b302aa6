"""What a training run measures: held-out NME, validation NME, AFLW2000-3D at the end,
and which of them ranks its checkpoints.

:class:`Evaluator` binds the prediction core (``inference.core``) to a run's
network and constants; the training loop calls :meth:`Evaluator.evaluate` at its
evaluation steps and :meth:`Evaluator.aflw2000` once at the end; checkpoints are
ranked by :func:`selection_metric`. NME is ``metrics.nme`` (the one definition), in
percent here.
"""
from __future__ import annotations

import numpy as np

from dasl_jax.errors import DaslError
from dasl_jax.evaluation import aflw2000, metrics, protocols
from dasl_jax.face_model import schemes
from dasl_jax.inference import core
from dasl_jax.inference.predictor import Predictor


class Evaluator:
  """The prediction core bound to a run's network and constants.

  The FLM of a 4-channel model comes from the held-out set's ``points18``
  (synthetic held-out set) or is self-bootstrapped (``bootstrap_iters`` passes:
  validation crops have no detector landmarks).

  Args:
    module: the regressor.
    model_config: its ``ModelConfig`` (input channels, pixel convention).
    stats: ``ParamStats`` of its output.
    lm_model: 68-row morphable model.
    batch_size: crops per forward pass.
    scheme21: the wild labels' 21-point scheme (``face_model.schemes``), or None.
    tta: test-time averaging, 'none' or 'flip' (``core.mirror_fit``), of every
      evaluation (held-out, validation, AFLW2000-3D).
  """

  def __init__(self, module, model_config, stats, lm_model, batch_size, bootstrap_iters=2,
               scheme21=None, tta='none'):
    self.module, self.model_config = module, model_config
    self.stats, self.lm_model, self.scheme21 = stats, lm_model, scheme21
    self.batch_size, self.tta = int(batch_size), tta
    c, conv = model_config.in_channels, model_config.convention
    flip = core.mirror_fit(tta, stats, lm_model, conv)
    self.given = core.make_forward(module, c, conv, 0, flip)
    self.boot = (core.make_forward(module, c, conv, max(int(bootstrap_iters), 1), flip)
                 if c == 4 else self.given)

  def _predict(self, fn, variables, data, points=True):
    n = len(data['image'])
    return core.predict_crops(fn, variables, self.stats, self.lm_model, data['image'], n,
                              data.get('points18') if points else None,
                              data.get('mask18') if points else None, self.batch_size)

  def heldout(self, variables, heldout):
    """Held-out NME (%) of the 68 crop landmarks, plain mean over crops.

    Args:
      heldout: ``image`` (N, 120, 120, 3), ``points18``, ``mask18``, ``lms68`` (N, 68, 2).
    """
    lms = self._predict(self.given, variables, heldout)['lms68']
    return float(100 * metrics.nme(lms, heldout['lms68']).mean())

  def validation(self, variables, val):
    """Validation metrics on held-out crops (``DataBundle.validation``).

    Returns:
      dict ``val21_nme``: AFLW 21-point NME (%, invisible points masked, normalised by
      the visible points' box, plain mean over crops) against the hand labels, and
      ``val21_mean_of_bins``; with teacher labels ``val_teacher_nme``: 68-point NME (%)
      against the teacher's landmarks (how far the student left the 3D side's labels);
      with the wild labels' scheme ``val21_scheme_nme``: the same 21-point NME with the
      prediction's points placed by AFLW's definitions (``face_model.schemes``): what is
      left of the disagreement once the labelling style is taken out.
    """
    out = self._predict(self.boot, variables, val, points=False)
    lms = out['lms68']
    gt21 = np.where(val['vis21'][..., None] > 0, val['pts21'], -1)
    summary, _ = metrics.aflw21_nme(lms, gt21, val['yaws'], val['vis21'] > 0)
    res = {'val21_nme': summary['mean'], 'val21_mean_of_bins': summary['mean_of_bins']}
    if self.scheme21 is not None:
      pts21 = np.asarray(schemes.points2d_from_params(out['params'], self.lm_model,
                                                      self.scheme21,
                                                      self.model_config.convention))
      per = metrics.nme(pts21, np.asarray(gt21, np.float64), val['vis21'] > 0)
      res['val21_scheme_nme'] = float(np.mean(per) * 100.0)
    if 'teacher_lms68' in val:
      res['val_teacher_nme'] = float(100 * metrics.nme(lms, val['teacher_lms68']).mean())
    return res

  def evaluate(self, variables, heldout=None, validation=None):
    """Everything measured at an evaluation step: ``heldout_nme`` when there is a
    held-out set, :meth:`validation`'s keys when there is a validation set."""
    rec = {}
    if heldout is not None:
      rec['heldout_nme'] = self.heldout(variables, heldout)
    if validation is not None:
      rec.update(self.validation(variables, validation))
    return rec

  def aflw2000(self, folder, variables):
    """AFLW2000-3D 68-point NME (%) of a finished run (``protocols``' defaults: 1,998
    images with the detector FLM for 4-channel models, else all 2,000; ``tta`` as
    ``inference.Predictor``).

    Returns:
      dict ``nme_mean_of_bins``, ``nme_mean``, ``nme_bins``, ``n`` (original ground truth).
    """
    ds = aflw2000.load(folder)
    predictor = Predictor.from_parts(self.module, variables, self.model_config, self.stats,
                                     self.lm_model, batch_size=self.batch_size, tta=self.tta)
    _, idx = protocols.aflw2000_indices(ds, None, self.model_config.in_channels, 'detector')
    res = protocols.score_aflw2000(ds, idx, protocols.predict_aflw2000(predictor, ds, idx),
                                   pose=False)['original']
    return {'nme_mean_of_bins': res['mean_of_bins'], 'nme_mean': res['mean'],
            'nme_bins': res['bins'], 'n': res['n']}


def selection_metric(choice, has_heldout, has_validation, has_scheme, has_teacher):
  """The logged metric that ranks checkpoints (``--config.train.select_metric``).

  ``auto``: the validation 21-point NME through the wild labels' scheme when there is
  one (style-free), else the plain validation NME, else the held-out NME. Never a
  benchmark's test set.
  """
  if choice == 'auto':
    if has_validation:
      return 'val21_scheme_nme' if has_scheme else 'val21_nme'
    return 'heldout_nme'
  need = {'heldout_nme': (has_heldout, 'a held-out set (--config.data.heldout)'),
          'val21_nme': (has_validation, 'a validation split (--config.data.validation)'),
          'val21_scheme_nme': (has_validation and has_scheme,
                               'a validation split and a wild scheme (--config.data.wild_scheme)'),
          'val_teacher_nme': (has_validation and has_teacher,
                              'a validation split and teacher labels (source_3d=teacher)')}
  ok, what = need[choice]
  if not ok:
    raise DaslError(f'--config.train.select_metric={choice} needs {what}')
  return choice
