"""Train a 2DASL regressor.

  python -m experiments.train --flagfile=experiments/configs/tiny.flags [--workdir DIR]

Every hyper-parameter is a flag ``--config.SECTION.FIELD=VALUE`` (see
dasl_jax/training/config.py); a flagfile is a list of such lines. The run resumes from
the latest checkpoint in ``--workdir``.

SIGTERM (what cluster schedulers send before a kill) stops the run at the next
step boundary: the step reached is saved, one line says so on stderr, and the
command exits with status 143 (128 + SIGTERM, what a shell reports for a process
killed by SIGTERM). Not 0 on purpose: the training is not finished, so
``train && evaluate`` must not go on, and job systems that restart failed jobs
(Kubernetes ``restartPolicy: OnFailure``, retry wrappers) must restart it;
rerunning the same command resumes.
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from dasl_jax import cli
from dasl_jax.training.config import default_config

FLAGS = flags.FLAGS
EXIT_TERMINATED = 143  # 128 + SIGTERM


def _flag_error(e):
  """One line for a bad flag or flagfile (no traceback from absl/ml_collections)."""
  from dasl_jax.training.config import unknown_field_message
  unknown = unknown_field_message(sys.argv[1:])
  if unknown:
    print(f'error: bad flag: {unknown}', file=sys.stderr)
    sys.exit(2)
  while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(...))
    e = e.args[0]
  msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
  msg = ' '.join(str(msg).split())
  print(f'error: bad flag: {msg}', file=sys.stderr)
  sys.exit(2)


try:
  # config_flags reads sys.argv (and flagfiles) already here, at definition time.
  config_flags.DEFINE_config_dict('config', default_config(), 'Training configuration.')
except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
  _flag_error(e)
flags.DEFINE_string('workdir', 'runs/default', 'Where checkpoints and logs go.')


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from dasl_jax.training.loop import Terminated, train_and_evaluate
  try:
    final = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except Terminated:  # the loop printed what was saved
    return EXIT_TERMINATED
  print(' '.join(f'{k}={v}' for k, v in final.items() if not isinstance(v, dict)))


main = cli.command(_main)


def parse_flags(argv):
  """absl's parser, with a misspelled or mistyped --config field as one line."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    _flag_error(e)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
