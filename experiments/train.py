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
rerunning the same command resumes. Ctrl-C does the same with status 130
(128 + SIGINT); a second Ctrl-C stops at once, saving nothing more.
"""
import sys

from absl import app
from absl import flags

from dasl_jax import cli
from dasl_jax.errors import DaslError
from dasl_jax.training.config import config_from_args

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', 'runs/default', 'Where checkpoints and logs go.')


def _main(argv):
  del argv  # parse_flags refused positional arguments
  from dasl_jax.training.loop import train_and_evaluate
  from dasl_jax.training.preemption import Terminated
  try:
    final = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except Terminated as e:  # the loop printed what was saved
    return e.exit_code
  print(' '.join(f'{k}={v}' for k, v in final.items() if not isinstance(v, dict)))


main = cli.command(_main)


def parse_flags(argv):
  """The config through ``training.config.config_from_args`` (on absl's FLAGS, so
  ``--workdir`` parses in the same pass); a bad flag is one line, exit 2."""
  try:
    config_from_args(argv[1:], flag_values=FLAGS)
  except DaslError as e:
    print(f'error: bad flag: {e}', file=sys.stderr)
    sys.exit(2)
  return argv[:1]


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
