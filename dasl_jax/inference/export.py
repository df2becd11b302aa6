"""The inference function as a standalone artefact: jax.export (StableHLO) and ONNX.

(ONNX: :func:`export_onnx`, written by :mod:`dasl_jax.inference.onnx`.)

The exported function maps uint8 BGR crops (and, for 4-channel models, the 18
FLM points in crop pixels) to whitened parameters, de-whitened parameters and
the 68 crop landmarks::

  f(crops (B, 120, 120, 3) uint8[, points18 (B, 18, 2) float32])
    -> whitened (B, 62), params (B, 62), lms68 (B, 68, 2)

The batch dimension is symbolic (``jax.export.symbolic_shape('b')``), so one
artefact serves every batch size. Weights, whitening statistics and the
68-landmark basis are constants inside it: :func:`load` needs only jax (the
model code is not imported). A 4-channel model exported with ``flm='bootstrap'``
takes only crops and runs the self-bootstrapped FLM inside.

Files: ``NAME.jaxexport`` (``Exported.serialize()`` bytes) and
``NAME.jaxexport.json`` (what the inputs and outputs are).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from dasl_jax.inference import core
from dasl_jax.errors import DaslError

OUTPUTS = ('whitened', 'params', 'lms68')
FLM_MODES = ('input', 'bootstrap')


def inference_function(restored, landmark_model, flm='input', bootstrap_iters=2):
  """A pure function of the inputs only (variables and constants closed over).

  Args:
    restored: ``checkpoint.restore`` output.
    landmark_model: 68-row (or dense) morphable model for the landmarks.
    flm: 4-channel models: 'input' (points18 is an argument) or 'bootstrap'
      (from the mean face, ``bootstrap_iters`` passes).
  Returns:
    (fn, input names). ``fn(crops[, points18]) -> (whitened, params, lms68)``.
  """
  if flm not in FLM_MODES:
    raise DaslError(f'--flm must be one of {FLM_MODES}, got {flm!r}')
  cfg = restored.model_config
  module = restored.module
  variables = jax.tree_util.tree_map(jnp.asarray, restored.variables)
  lm = landmark_model.landmark_model()
  stats = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), restored.param_stats)
  iters = bootstrap_iters if (cfg.in_channels == 4 and flm == 'bootstrap') else 0

  def run(crops, points18=None):
    out = core.forward(module, variables, stats, lm, crops, points18, None,
                       in_channels=cfg.in_channels, convention=cfg.convention,
                       bootstrap_iters=iters)
    return tuple(out[k] for k in OUTPUTS)

  if cfg.in_channels == 4 and flm == 'input':
    return run, ('crops', 'points18')
  return (lambda crops: run(crops)), ('crops',)


def input_specs(names, batch: Optional[int] = None):
  """ShapeDtypeStructs of the inputs; ``batch=None`` makes the batch symbolic."""
  b = jax.export.symbolic_shape('b')[0] if batch is None else batch
  spec = {'crops': jax.ShapeDtypeStruct((b, 120, 120, 3), jnp.uint8),
          'points18': jax.ShapeDtypeStruct((b, 18, 2), jnp.float32)}
  return [spec[n] for n in names]


def export_model(restored, landmark_model, flm='input', bootstrap_iters=2,
                 batch: Optional[int] = None, platforms: Optional[Sequence[str]] = None):
  """Trace and lower the inference function with ``jax.export``.

  Args:
    batch: None for a symbolic batch dimension, or a fixed size.
    platforms: e.g. ('cpu',) or ('cpu', 'cuda'); default: the current backend.
  Returns:
    (``jax.export.Exported``, metadata dict).
  """
  fn, names = inference_function(restored, landmark_model, flm, bootstrap_iters)
  kw = {} if platforms is None else {'platforms': tuple(platforms)}
  exp = jax.export.export(jax.jit(fn), **kw)(*input_specs(names, batch))
  cfg = restored.model_config
  meta = {'format': 'jax.export', 'inputs': list(names), 'outputs': list(OUTPUTS),
          'batch': 'symbolic' if batch is None else batch,
          'platforms': list(exp.platforms), 'convention': cfg.convention,
          'in_channels': cfg.in_channels, 'flm': flm if cfg.in_channels == 4 else 'none',
          'bootstrap_iters': bootstrap_iters if (cfg.in_channels == 4 and flm == 'bootstrap')
          else 0,
          'param_stats_source': restored.param_stats.source,
          'jax_version': jax.__version__,
          'doc': 'crops: (B, 120, 120, 3) uint8 BGR; points18: (B, 18, 2) float32 crop '
                 'pixels; whitened, params: (B, 62); lms68: (B, 68, 2) crop pixels'}
  return exp, meta


def save(exported, meta, path):
  """Write ``path`` (serialised bytes) and ``path.json`` (metadata). Returns path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(bytes(exported.serialize()))
  Path(str(path) + '.json').write_text(json.dumps(meta, indent=1) + '\n')
  return path


def load(path):
  """Read an exported artefact without any model code.

  Returns:
    (``jax.export.Exported``, metadata dict or {}); call with ``exp.call(*args)``.
  """
  path = Path(path)
  if not path.exists():
    raise DaslError(f'{path}: exported model not found')
  try:
    exp = jax.export.deserialize(bytearray(path.read_bytes()))
  except Exception as e:
    raise DaslError(f'{path}: not a jax.export artefact ({type(e).__name__}: {e})') from None
  mp = Path(str(path) + '.json')
  meta = json.loads(mp.read_text()) if mp.exists() else {}
  return exp, meta


# ----------------------------------------------------------------------------
# ONNX: written from the Flax variables by dasl_jax/inference/onnx.py (jax2onnx, the
# earlier route, pins orbax-checkpoint < 0.11.37 and cannot share this environment).


def export_onnx(restored, landmark_model, path, flm='input'):
  """Write the inference function as an ONNX model (symbolic batch) to ``path``.

  Same inputs and outputs as :func:`inference_function` with ``flm='input'``;
  a 4-channel model's self-bootstrapped FLM runs on the host
  (``onnx_export.OnnxPredictor``), so ``flm='bootstrap'`` is refused.
  """
  if flm not in FLM_MODES:
    raise DaslError(f'--flm must be one of {FLM_MODES}, got {flm!r}')
  if flm == 'bootstrap' and restored.model_config.in_channels == 4:
    raise DaslError('--flm bootstrap: ONNX models take points18 as an input; the '
                    'bootstrap loop runs on the host (dasl_jax.inference.onnx.OnnxPredictor)')
  from dasl_jax.inference import onnx as onnx_export
  return onnx_export.export_onnx(restored, landmark_model, path)
