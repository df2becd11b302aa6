"""int8 regressors: onnxruntime's static quantization of an exported ONNX regressor.

``experiments.export --format onnx --quantize int8 --calibration DIR`` writes the
float graph (:mod:`dasl_jax.inference.onnx`), runs it on face crops from a folder
the user names to record the range of every activation (the calibration; use
training-side crops such as ``$DASL_ASSETS/aflw-wild/images``, never the test
set), and writes a QDQ model: 8-bit weights (one scale per output channel) and
uint8 activations in the convolutions. The input stage (uint8 -> normalised float,
the FLM channel), the linear head and the landmark stage (de-whitening, the
68-landmark basis, projection) stay float32, so the file keeps the constants
``onnx.read_regressor`` reads back, and ``OnnxPredictor.from_file`` runs it like
the float model.

Choices, measured on mb05 and 500 AFLW2000-3D crops (every 4th; float 3.858 /
3.032 mean of bins on the original / re-annotated ground truth; 256 aflw-wild
calibration crops; AVX2 Zen 3 without VNNI):

* the linear head stays float: quantizing it too cost +0.22 / +0.33 even in
  simulated quantization (onnxruntime's graph optimisations off, so every
  QDQ pair runs in float);
* uint8 weights (u8u8 kernels), not int8: onnxruntime's u8s8 kernels on AVX2
  without VNNI sum pairs of u8 x s8 products in int16 (``vpmaddubsw``), which
  saturates: u8s8 gave 4.068 / 3.326 against 3.785 / 3.027 simulated; u8u8
  gave 3.796 / 3.066, the same as its simulation (3.795 / 3.066). On a CPU with
  VNNI the s8 weights (``weight_type='int8'``) are the fast path; a file made so
  is wrong on a CPU without it.

Whether int8 is faster depends on the CPU (VNNI: ``avx512_vnni`` / ``avx_vnni``
in ``/proc/cpuinfo``). ``benchmarks.pipeline_e2e`` measures the float and int8
models in one run; ``experiments/results/int8.md`` holds the figures and the NME
change on all 2,000 crops.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dasl_jax.errors import DaslError

# Crops read from --calibration (spread evenly over the sorted folder).
DEFAULT_CALIBRATION_SIZE = 256
METHODS = ('minmax', 'entropy', 'percentile')
# Quantized operators: the network's convolutions (module docstring: the head, a
# Gemm, stays float; MatMul is the landmark basis and the FLM's pixel index).
OP_TYPES = ('Conv',)
WEIGHT_TYPES = ('uint8', 'int8')


def cpu_has_vnni() -> bool:
  """Whether this CPU has VNNI (the int8 dot-product instructions), from /proc/cpuinfo."""
  try:
    text = Path('/proc/cpuinfo').read_text()
  except OSError:
    return False
  return 'avx512_vnni' in text or 'avx_vnni' in text


def calibration_crops(folder, n=DEFAULT_CALIBRATION_SIZE, size=120):
  """Face crops for calibration: up to ``n`` images spread evenly over a folder
  (sorted names), each resized to ``size`` x ``size`` if it is not already.

  Args:
    folder: a folder of face crops (e.g. aflw-wild's ``images/``).
  Returns:
    ((m, size, size, 3) uint8 BGR, list of the m files used).
  Raises:
    DaslError: not a folder, or no readable image in it (one line naming it).
  """
  from dasl_jax.io.input_files import IMAGE_SUFFIXES
  from dasl_jax.io.media import load_image
  folder = Path(folder)
  if not folder.is_dir():
    raise DaslError(f'--calibration {folder}: not a folder (a folder of face crops, e.g. '
                    'aflw-wild/images; never the test set)')
  if n < 1:
    raise DaslError(f'--calibration_size must be >= 1, got {n}')
  files = sorted(p for p in folder.iterdir()
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
  picks = files if len(files) <= n else [files[i] for i in
                                         np.linspace(0, len(files) - 1, n).round().astype(int)]
  crops, used = [], []
  for p in picks:
    try:
      img = load_image(p)
    except DaslError:
      continue
    if img.shape[:2] != (size, size):
      img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    crops.append(img)
    used.append(p)
  if not crops:
    raise DaslError(f'--calibration {folder}: no readable image in it ({len(files)} files with '
                    'an image suffix; expected face crops such as aflw-wild/images)')
  return np.stack(crops), used


def quantize_regressor(float_path, out_path, crops, method='minmax', weight_type='uint8',
                       per_channel=True, note=''):
  """Write the int8 model of a float regressor ``.onnx``.

  Args:
    float_path: a regressor written by ``onnx.export_onnx`` (read with
      ``onnx.read_regressor``: another model fails there).
    out_path: where the int8 model goes.
    crops: (m, 120, 120, 3) uint8 calibration crops (:func:`calibration_crops`).
      A 4-channel model's FLM points for them come from the float model
      (self-bootstrapped).
    method: onnxruntime's calibration: 'minmax', 'entropy' or 'percentile'.
    weight_type: 'uint8' (u8u8 kernels: exact on every x86 CPU) or 'int8' (u8s8:
      fast with VNNI, saturates without it; module docstring).
    per_channel: one weight scale per output channel (depthwise filters differ a lot).
    note: stored in the metadata (``calibration``), e.g. the folder and count.
  Returns:
    the output path.
  """
  import onnx
  from onnxruntime import quantization as q
  from dasl_jax.inference import onnx as onnx_graphs
  if method not in METHODS:
    raise DaslError(f'--calibration_method must be one of {", ".join(METHODS)}, got {method!r}')
  if weight_type not in WEIGHT_TYPES:
    raise DaslError(f'--int8_weights must be one of {", ".join(WEIGHT_TYPES)}, '
                    f'got {weight_type!r}')
  _, info = onnx_graphs.read_regressor(float_path)
  crops = np.ascontiguousarray(crops, np.uint8)
  points = None
  if info['in_channels'] == 4:
    from dasl_jax.geometry import landmarks as L
    ref = onnx_graphs.OnnxPredictor.from_file(float_path).predict_crops(crops)
    points = L.select18_np(ref['lms68']).astype(np.float32)

  class Reader(q.CalibrationDataReader):
    def __init__(self):
      self.batches = iter(range(0, len(crops), 16))

    def get_next(self):
      s = next(self.batches, None)
      if s is None:
        return None
      feed = {'crops': crops[s:s + 16]}
      if points is not None:
        feed['points18'] = points[s:s + 16]
      return feed

  out_path = Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  calib = {'minmax': q.CalibrationMethod.MinMax, 'entropy': q.CalibrationMethod.Entropy,
           'percentile': q.CalibrationMethod.Percentile}[method]
  # onnxruntime's quantizer prints its progress and a pre-processing hint through the
  # root logger and stdout: the command prints one line of its own instead.
  import contextlib
  import io
  import logging
  logging.disable(logging.WARNING)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      q.quantize_static(str(float_path), str(out_path), Reader(),
                        quant_format=q.QuantFormat.QDQ, op_types_to_quantize=list(OP_TYPES),
                        per_channel=per_channel, activation_type=q.QuantType.QUInt8,
                        weight_type=(q.QuantType.QUInt8 if weight_type == 'uint8'
                                     else q.QuantType.QInt8), calibrate_method=calib)
  finally:
    logging.disable(logging.NOTSET)
  model = onnx.load(str(out_path))
  meta = {m.key: m.value for m in model.metadata_props}
  meta.update({'quantization': 'int8', 'calibration': note or f'{len(crops)} crops',
               'calibration_method': method, 'weight_type': weight_type,
               'per_channel': str(bool(per_channel))})
  del model.metadata_props[:]
  onnx.helper.set_model_props(model, meta)
  out_path.write_bytes(model.SerializeToString())
  onnx_graphs.read_regressor(out_path)  # the constants survived quantization
  return out_path
