r"""Label face crops with dlib's 68-point shape predictor (iBUG definition), once.

  pip install dlib-bin face-recognition-models     # optional, data preparation only
  python -m experiments.label_dlib --images $DASL_ASSETS/aflw-wild/images \
      --list $DASL_ASSETS/aflw-wild/list.txt --out runs/dlib/aflw_wild_dlib68.csv

The output is a landmark file (``name,x1,y1,...,x68,y68`` in each crop's pixels)
that the wild ``folder`` source reads: ``--config.data.source_wild=folder
--config.data.dir_wild_folder=IMAGES --config.data.wild_landmarks=FILE``. Crops
dlib cannot label are counted, named in ``FILE.skipped.txt`` and left out.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags

from dasl_jax import cli
from dasl_jax.data import dlib_labels
from dasl_jax.data import readers
from dasl_jax.errors import DaslError

flags.DEFINE_string('images', None, 'Folder of face crops.')
flags.DEFINE_string('list', None, 'Crop names, one a line (default: every .jpg/.png in --images).')
flags.DEFINE_string('out', None, 'Landmark file to write.')
flags.DEFINE_string('predictor', None, 'shape_predictor_68_face_landmarks.dat (default: the '
                    'face_recognition_models package\'s).')
flags.DEFINE_integer('calibration_sample', 300, 'Crops detected to calibrate the face rectangle.')
flags.DEFINE_float('tolerance', 0.1, 'Skip a crop whose points leave it by more than this '
                   'fraction of its size.')
flags.DEFINE_bool('require_detection', True, "Label only crops where dlib's own detector finds "
                  'the face (the predictor is unreliable elsewhere: profiles).')
flags.DEFINE_bool('progress', True, 'Progress bars.')
FLAGS = flags.FLAGS


def _main(argv):
  del argv
  if not FLAGS.images or not FLAGS.out:
    raise DaslError('--images and --out are required')
  images = Path(FLAGS.images)
  if not images.is_dir():
    raise DaslError(f'--images {images}: folder not found')
  if FLAGS.list:
    names = readers.read_list(FLAGS.list)
  else:
    names = sorted(p.name for p in images.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg',
                                                                             '.png'))
  if not names:
    raise DaslError(f'--images {images}: no crops to label')
  dlib_labels.load_predictor(FLAGS.predictor)  # fail early on a missing dependency
  t0 = time.perf_counter()
  rect, n_found = dlib_labels.calibrate_rect(images, names, FLAGS.calibration_sample,
                                             progress=FLAGS.progress)
  pts, ok, skipped = dlib_labels.label_crops(images, names, rect, FLAGS.tolerance,
                                             FLAGS.progress, FLAGS.predictor,
                                             FLAGS.require_detection)
  n = dlib_labels.write_landmark_file(
      FLAGS.out, names, pts, ok,
      header=f'dlib 68-point shape predictor, face rectangle {[round(v, 4) for v in rect]} '
             f'of the crop (median of {n_found} detections), require_detection='
             f'{FLAGS.require_detection}')
  out = Path(FLAGS.out)
  out.with_suffix(out.suffix + '.skipped.txt').write_text(
      ''.join(f'{k}: {v}\n' for k, v in skipped.items()))
  reasons = {}
  for v in skipped.values():
    reasons[v] = reasons.get(v, 0) + 1
  summary = {'crops': len(names), 'labelled': n, 'skipped': len(skipped), 'why': reasons,
             'require_detection': FLAGS.require_detection,
             'rect_fraction': rect.tolist(), 'calibration_detections': n_found,
             'seconds': time.perf_counter() - t0}
  out.with_suffix(out.suffix + '.json').write_text(json.dumps(summary, indent=1) + '\n')
  print(f'{out}: {n} of {len(names)} crops labelled, {len(skipped)} skipped '
        f'(listed in {out.name}.skipped.txt); face rectangle {rect.round(3).tolist()} of the '
        f'crop from {n_found} detections; {summary["seconds"]:.0f} s')


main = cli.command(_main)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
