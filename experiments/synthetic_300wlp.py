r"""Write a small synthetic dataset in 3DDFA's 300W-LP training layout.

  python -m experiments.synthetic_300wlp --out=/tmp/3DDFA --n=64
  python -m experiments.train --flagfile=experiments/configs/2dasl_300wlp.flags \
    --workdir=/tmp/run --config.data.dir_300wlp=/tmp/3DDFA/train_aug_120x120 \
    --config.data.landmarks_300wlp=/tmp/3DDFA/fan_landmarks_train_aug.txt \
    --config.train.num_steps=2 --config.data.heldout=none

Synthetic faces on the real BFM (``--bfm_dir``, default ``$DASL_ASSETS/bfm``);
see ``dasl_jax/data/synthetic_300wlp.py`` for the layout and what the
landmark file is. For smoke runs of the paper's recipe, not for training.
"""
from __future__ import annotations

from absl import app, flags

from dasl_jax import assets, cli
from dasl_jax.data import synthetic_300wlp
from dasl_jax.errors import DaslError

flags.DEFINE_string('out', None, 'Folder to write (train_aug_120x120/, train.configs/, ...).')
flags.DEFINE_integer('n', 64, 'Number of crops.')
flags.DEFINE_integer('seed', 0, 'Dataset seed.')
flags.DEFINE_string('bfm_dir', None, 'BFM folder (default $DASL_ASSETS/bfm).')
cli.define_flags('convention', convention='crop pixel convention of the labels')
FLAGS = flags.FLAGS


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS.out:
    raise DaslError('--out is required')
  paths = synthetic_300wlp.write_300wlp(FLAGS.out, FLAGS.n, FLAGS.bfm_dir or assets.asset('bfm'),
                                        FLAGS.seed, FLAGS.convention)
  print(f'wrote {FLAGS.n} crops: --config.data.dir_300wlp={paths["dir_300wlp"]} '
        f'--config.data.landmarks_300wlp={paths["landmarks"]}')


main = cli.command(_main)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
