"""What every command does around its work: one place for the preamble.

``main = cli.command(body)`` gives an absl ``main(argv)`` that, before JAX starts
its threads, tunes glibc malloc (XLA:CPU's per-step temporaries stay in the heap
instead of costing ~40% of CPU time in page faults; benchmarks/README.md), keeps
Orbax's per-file INFO logging off the console (unless ``--verbosity`` is given),
and turns a :class:`DaslError` into one ``error: ...`` line and exit status 2.
``body(argv)`` may return an exit status.
"""
from __future__ import annotations

import sys

from dasl_jax.errors import DaslError


def command(body, tune_malloc: bool = True):
  def main(argv):
    if tune_malloc:
      from dasl_jax import cpu_runtime
      cpu_runtime.tune_malloc()
    from absl import flags, logging
    if 'verbosity' not in flags.FLAGS or not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    try:
      code = body(argv)
    except DaslError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    if code:
      sys.exit(code)
  main.__doc__ = body.__doc__
  return main


def parse_flags(argv):
  """absl's flag parser, with a bad or unknown option as one ``error:`` line (exit 2)
  instead of absl's usage text. Pass as ``app.run(main, flags_parser=cli.parse_flags)``."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
