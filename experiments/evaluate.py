r"""Evaluate on AFLW2000-3D: 68-point NME by yaw bin (original and re-annotated GT), pose MAE.

From a model directory (a converted or trained checkpoint):

  python -m experiments.evaluate --checkpoint /tmp/mb05 \
    --aflw2000_dir ../shared/assets/aflw2000-3d [--subset 1998|2000] [--json out.json]

From saved predictions, (N, 62) whitened (or, with --param_kind raw,
de-whitened) parameters or (N, 2, 68) crop-pixel landmarks, N = 2000 (or 1998
with --subset 1998); with --names FILE (one AFLW2000-3D file name a line, any
N), (N, 2, 68) or (N, 3, 68) landmarks in original-image pixels:

  python -m experiments.evaluate --predictions params.npy \
    --param_stats stats.pkl --bfm ../shared/assets/bfm --convention v2 \
    --aflw2000_dir ../shared/assets/aflw2000-3d

3DDFA_V2's mb05 converted with experiments.convert_checkpoint gives, on all
2000 images, original GT: 2.925 / 3.667 / 4.784, mean of bins 3.792.
4-channel models take their FLM channel from detect_testData_1998.txt, which
has no detection for images 1081 and 1798: only --subset 1998 works for them,
unless --flm bootstrap (the landmark map self-bootstrapped from the mean face,
--bootstrap_iters passes; no detector needed).

--tta flip averages each crop's prediction with its mirror image's, mapped back
(dasl_jax.geometry.mirror); landmarks and pose come from the averaged parameters.

Protocol variants: --yaw_file default|new bins by AFLW2000-3D.pose.npy
(1312/383/305 images) or AFLW2000-3D-new.pose.npy (1306/462/232); --nme 3d is
2DASL's 3D 68-point NME (z shifted to a minimum of 0 per face, normalised by the
2D ground-truth box). The first output line says which protocol ran.

From the full images, a detector choosing the crop, then --refine 1 landmark
re-crop pass (detection rate, NME on the found faces per pass, and the same model
on the ground-truth crops of those images):

  python -m experiments.evaluate --checkpoint /tmp/mb05 \
    --aflw2000_images ../shared/assets/aflw2000-3d/AFLW2000 --detector faceboxes|haar

Any of these on onnxruntime: --backend onnxruntime (the graphs built from the
checkpoint), or --onnx MODEL.onnx instead of --checkpoint (an exported model,
float or int8: experiments.export --format onnx [--quantize int8]).

The AFLW 21-point benchmark (68 predicted points mapped to AFLW's 21, invisible
points masked, NME normalised by the visible ground truth's box), on a folder
with the aflw-wild layout:

  python -m experiments.evaluate --checkpoint /tmp/mb05 --aflw_dir ../shared/assets/aflw-wild
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from absl import app, flags

from dasl_jax import cli
from dasl_jax.evaluation import request as eval_request

flags.DEFINE_string('aflw2000_dir', None, 'AFLW2000-3D folder (default: $DASL_ASSETS/aflw2000-3d).')
flags.DEFINE_string('predictions', None, '.npy of (N, 62) parameters, (N, 2, 68) landmarks '
                    '(crop pixels; image pixels with --names) or (N, 3, 68) image-pixel landmarks.')
flags.DEFINE_string('aflw2000_images', None, 'End to end from the full images (e.g. '
                    '$DASL_ASSETS/aflw2000-3d/AFLW2000): --detector finds the faces, 3DDFA_V2\'s '
                    'box rule crops them; detection rate and NME on the found faces, and the '
                    'same model on the ground-truth ROI crops of those images.')
cli.define_flags('detector', 'faceboxes_weights', 'checkpoint', 'bfm', 'convention',
                 'bootstrap_iters', 'dot_dtype',
                 detector='face detector for --aflw2000_images',
                 checkpoint='model directory to run on the crops',
                 bfm='morphable model (folder or file) for landmarks from parameters '
                 '(default: $DASL_ASSETS/bfm, i.e. its keypoints68)',
                 convention='pixel convention of (N, 62) predictions (checkpoints store '
                 'their own)',
                 bootstrap_iters='--flm bootstrap: forward passes of the self-bootstrapped FLM')
flags.DEFINE_string('names', None, 'With --predictions: a text file naming the N evaluated '
                    'AFLW2000-3D images (one file name a line); landmarks are then in '
                    'original-image pixels.')
flags.DEFINE_enum('landmark_frame', 'auto', ['auto', 'crop', 'image'], 'Pixels of saved '
                  'landmarks: auto = image with --names or (N, 3, 68), crop otherwise.')
flags.DEFINE_enum('param_kind', 'whitened', ['whitened', 'raw'], '(N, 62) predictions: the '
                  'network\'s whitened output, or raw (de-whitened) parameters as 3DDFA_V2 saves.')
flags.DEFINE_enum('yaw_file', 'default', ['default', 'new'], 'Yaw bins from '
                  'AFLW2000-3D.pose.npy (default) or AFLW2000-3D-new.pose.npy.')
flags.DEFINE_enum('nme', '2d', ['2d', '3d'], '2D NME (x, y), or 2DASL\'s 3D NME (z shifted '
                  'to min 0 per face; original ground truth only).')
flags.DEFINE_string('onnx', None, 'Instead of --checkpoint: a regressor exported by '
                    'experiments.export --format onnx (float or --quantize int8), run on '
                    'onnxruntime; every protocol of this command.')
flags.DEFINE_enum('backend', 'jax', ['jax', 'onnxruntime'], 'Runtime of the regressor (and of '
                  'FaceBoxes with --aflw2000_images): jax, or onnxruntime (the same functions as '
                  'ONNX graphs built from the weights). --onnx implies onnxruntime.')
flags.DEFINE_integer('refine', 1, 'With --aflw2000_images: landmark re-crop passes after the '
                     'detector\'s crop (3DDFA\'s landmark rule, the ground-truth crops\' rule; '
                     'what experiments.predict does by default); 0: the detector\'s crop only.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
flags.DEFINE_string('param_stats', None, 'Whitening statistics for (N, 62) predictions.')
flags.DEFINE_enum('subset', None, ['1998', '2000'], 'All 2000 images, or 2DASL\'s 1998 '
                  '(default: 2000; 1998 for 4-channel models).')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_integer('batch_size', 128, 'Images per jitted forward pass.')
flags.DEFINE_string('predictions_out', None, 'Save predicted crop landmarks (N, 2, 68) here.')
flags.DEFINE_enum('flm', 'detector', ['detector', 'bootstrap'], '4-channel models: FLM channel '
                  'from detect_testData_1998.txt (2DASL\'s protocol) or self-bootstrapped from '
                  'the mean face (no detector; any subset).')
flags.DEFINE_enum('tta', 'none', ['none', 'flip'], 'Test-time averaging of --checkpoint\'s '
                  'predictions: flip = each crop and its mirror image, the mirrored '
                  'parameters mapped back and averaged (twice the regression cost).')
flags.DEFINE_string('aflw_dir', None, 'Instead of AFLW2000-3D: the AFLW 21-point benchmark on a '
                    'folder with the aflw-wild layout (list.txt, images/, pts21.npy, yaws.npy, '
                    'roi_box.npy); 68 predicted points mapped to 21, invisible points masked.')
flags.DEFINE_integer('host_devices', 1, 'CPU only: split each batch over this many XLA host '
                     'devices (0: one per core; 1: off). benchmarks.inference measured 0 to 11% '
                     'at batch 128 on 2 cores, so it is off by default.')
FLAGS = flags.FLAGS


def _main(argv):
  del argv
  from dasl_jax import cpu_runtime
  cpu_runtime.split_host_devices(FLAGS.host_devices)  # before JAX starts
  fields = {f.name for f in dataclasses.fields(eval_request.Request)}
  values = {k: FLAGS[k].value for k in fields if k in FLAGS}
  if FLAGS.onnx and not FLAGS['backend'].present:
    values['backend'] = 'onnxruntime'
  req = eval_request.Request(
      **values,
      flm_given=FLAGS['flm'].present,
      ignored_with_checkpoint=tuple(k for k in ('convention', 'param_stats', 'param_kind',
                                                'landmark_frame') if FLAGS[k].present))
  res = eval_request.run(req)
  print(eval_request.format_results(res))
  if FLAGS.json:
    Path(FLAGS.json).write_text(json.dumps(res, indent=1) + '\n')


main = cli.command(_main)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
