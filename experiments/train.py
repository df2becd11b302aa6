"""Train a 2DASL regressor.

  python -m experiments.train --flagfile=experiments/configs/tiny.flags [--workdir DIR]

Every hyper-parameter is a flag ``--config.SECTION.FIELD=VALUE`` (see
dasl_jax/config.py); a flagfile is a list of such lines. The run resumes from
the latest checkpoint in ``--workdir``.
"""
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from dasl_jax.config import default_config
from dasl_jax.errors import DaslError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_dict('config', default_config(), 'Training configuration.')
flags.DEFINE_string('workdir', 'runs/default', 'Where checkpoints and logs go.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Orbax logs every file it writes at INFO; keep the console for the progress bar.
  if not FLAGS['verbosity'].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  from dasl_jax.training.loop import train_and_evaluate
  try:
    final = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except DaslError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(' '.join(f'{k}={v}' for k, v in final.items() if not isinstance(v, dict)))


if __name__ == '__main__':
  app.run(main)
