r"""The AFLW2000-3D study of 2DASL's losses (issues 6 and 12): train, evaluate, write the page.

    python -m experiments.ablation_aflw2000 [--seeds 0,1,2] [--runs b_l3d,...]
        [--levers lr_5e-5,...] [--root runs/aflw2000] [--page_only]

Arm (a) is the start model, 3DDFA_V2's MobileNet x0.5 converted into
``<root>/mb05``. Every other arm ``experiments/configs/aflw2000/<arm>.flags``
trains from it into ``<root>/<arm>_s<seed>`` (a finished run, one with
``aflw2000.json``, is kept; an interrupted one resumes), and AFLW2000-3D is
read once, on the checkpoint the run chose on its validation split
(``selection.json``). Levers (``dasl_jax.evaluation.study.LEVERS``) train on seed 0 into
``<root>/levers/`` and are scored on validation only.

The page ``experiments/results/aflw2000_ablation.md`` (with its JSON, the CED,
the validation curves and a picture grid) is written from the runs' files by
``dasl_jax.evaluation.study.write_page``; the runs are driven by ``dasl_jax.evaluation.study_runs``.
"""
from __future__ import annotations

import time

from absl import app
from absl import flags


from dasl_jax import cli
from dasl_jax.evaluation import study
from dasl_jax.evaluation import study_runs
from dasl_jax.errors import DaslError

flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds of every arm.')
flags.DEFINE_list('runs', list(study.ARMS), 'Arms to train (flagfiles under '
                  'experiments/configs/aflw2000).')
flags.DEFINE_list('levers', [], f'Levers to try on seed 0, validation only: some of '
                  f'{list(study.LEVERS)} (or "all").')
flags.DEFINE_list('diagnostics', [], 'Fair-start diagnostics (the first 30 steps, seed 0, '
                  'validated every 5): some of dasl_jax.evaluation.study_def.DIAGNOSTICS '
                  '(or "all").')
flags.DEFINE_string('root', 'runs/aflw2000', 'Work directories go here.')
flags.DEFINE_string('pretrained', None, "3DDFA_V2's mb05_120x120.pth (default: "
                    '$DASL_ASSETS/pretrained/mb05_120x120.pth); converted once into <root>/mb05.')
flags.DEFINE_string('aflw2000_dir', None, 'AFLW2000-3D folder (default $DASL_ASSETS/aflw2000-3d).')
flags.DEFINE_bool('tta', True, 'Also evaluate the start model (arm a_tta) and issue 20\'s '
                  'chosen checkpoints with flip test-time averaging.')
flags.DEFINE_bool('page_only', False, 'Do not train or evaluate; write the page from what exists.')
flags.DEFINE_list('extra', [], 'Extra training flags for every run (e.g. '
                  '--extra=--config.train.num_steps=5 for a smoke run).')
flags.DEFINE_string('results_dir', 'experiments/results', 'Where the page, plots and JSON go.')

FLAGS = flags.FLAGS


def _main(argv):
  del argv
  t0 = time.perf_counter()
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise DaslError(f'--seeds: whole numbers separated by commas, got {FLAGS.seeds}') from None
  levers = list(study.LEVERS) if FLAGS.levers == ['all'] else FLAGS.levers
  from dasl_jax.evaluation import study_def
  diagnostics = (list(study_def.DIAGNOSTICS) if FLAGS.diagnostics == ['all']
                 else FLAGS.diagnostics)
  page = study_runs.run_study(FLAGS.root, seeds, FLAGS.runs, levers, FLAGS.page_only,
                              FLAGS.results_dir, FLAGS.pretrained, FLAGS.aflw2000_dir,
                              FLAGS.extra, diagnostics, FLAGS.tta)
  print(f'{page} written ({time.perf_counter() - t0:.0f} s)')


main = cli.command(_main)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
