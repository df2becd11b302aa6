"""What every command does around its work: one place for the preamble.

``main = cli.command(body)`` gives an absl ``main(argv)`` that, before JAX starts
its threads, tunes glibc malloc (XLA:CPU's per-step temporaries stay in the heap
instead of costing ~40% of CPU time in page faults; benchmarks/README.md), keeps
Orbax's per-file INFO logging off the console (unless ``--verbosity`` is given),
turns on JAX's persistent compilation cache (:func:`use_compilation_cache`), and
turns a :class:`DaslError` into one ``error: ...`` line and exit status 2 (and a
Ctrl-C the command does not handle into one line and status 130).
``body(argv)`` may return an exit status.
"""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from absl import flags, logging

from dasl_jax import cpu_runtime
from dasl_jax.errors import DaslError, warn


def command(body, tune_malloc: bool = True):
  def main(argv):
    if tune_malloc:
      cpu_runtime.tune_malloc()
    if 'verbosity' not in flags.FLAGS or not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    use_compilation_cache()
    try:
      code = body(argv)
    except DaslError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C where the command does not handle it itself
      print('interrupted (Ctrl-C)', file=sys.stderr)
      sys.exit(130)  # 128 + SIGINT, as a shell reports it
    if code:
      sys.exit(code)
  main.__doc__ = body.__doc__
  return main


def compilation_cache_dir(environ=None):
  """Where compiled programs are kept between runs, or None for nowhere.

  ``JAX_COMPILATION_CACHE_DIR`` (JAX's own variable) wins when set; set it empty to
  turn the cache off. Otherwise ``$XDG_CACHE_HOME/dasl_jax/xla`` (``~/.cache/...``).
  """
  environ = os.environ if environ is None else environ
  if 'JAX_COMPILATION_CACHE_DIR' in environ:
    return Path(environ['JAX_COMPILATION_CACHE_DIR']) if environ['JAX_COMPILATION_CACHE_DIR'] \
        else None
  base = environ.get('XDG_CACHE_HOME') or str(Path('~/.cache').expanduser())
  return Path(base) / 'dasl_jax' / 'xla'


def use_compilation_cache(environ=None):
  """Keep compiled programs on disk, so a restarted run (after a preemption, a kill,
  or a changed flag that does not touch the step) loads its train step instead of
  compiling it again: resuming the tiny run (3 steps) took 20.5 s instead of 49 s on
  the 2-core AVX2 machine (README "Preemption"). Returns the folder used, or None."""
  path = compilation_cache_dir(environ)
  if path is None:
    return None
  # Here, not at the top: every command imports this module before its flags are read,
  # and a bad flag or --help should answer without the seconds JAX takes to import.
  import jax
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:  # a read-only home: run without the cache rather than fail
    warn(f'compilation cache off ({path}: {e.strerror})')
    return None
  # No size limit: JAX's eviction needs the filelock package, which is not a
  # dependency; the folder holds a few tens of MB per configuration and can be deleted.
  jax.config.update('jax_compilation_cache_dir', str(path))
  return path


def parse_flags(argv):
  """absl's flag parser, with a bad or unknown option as one ``error:`` line (exit 2)
  instead of absl's usage text. Pass as ``app.run(main, flags_parser=cli.parse_flags)``."""
  try:
    return flags.FLAGS(argv)
  except flags.UnrecognizedFlagError as e:
    msg = str(e)
    if 'did you mean' not in msg.lower():
      msg += suggest_flag(e.flagname, command_flags())
    print(f'error: {msg}', file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------
# Flags several commands share: name, type, default and choices defined here once.

_DOT_HELP = ('MobileNetV1 on CPU: operand dtype of its stem and 1x1 matrix products '
             '(bfloat16: float32 sums; ~1.2x batch-128 inference on AVX512-BF16 CPUs, '
             'benchmarks/README.md)')
SHARED_FLAGS = {
    'checkpoint': ('string', None, 'model work directory (experiments.train or '
                   'experiments.convert_checkpoint output)'),
    'bfm': ('string', None, 'BFM folder (keypoints68/, Model_PAF.pkl, optional w_shp_sim.npy); '
            'default: the face model the checkpoint was trained with'),
    'convention': ('enum', 'v1', 'crop pixel convention (docs/PROTOCOLS.md)', ('v1', 'v2')),
    'dot_dtype': ('enum', 'float32', _DOT_HELP, ('float32', 'bfloat16')),
    'bootstrap_iters': ('integer', 2, '4-channel models without detector landmarks: forward '
                        'passes of the self-bootstrapped FLM'),
    'detector': ('enum', 'faceboxes', "face detector: FaceBoxes (3DDFA_V2's; needs "
                 'FaceBoxesProd.pth) or OpenCV Haar cascades (no weights)', ('faceboxes', 'haar')),
    'faceboxes_weights': ('string', None, 'FaceBoxesProd.pth (default: '
                          '$DASL_ASSETS/pretrained/FaceBoxesProd.pth)'),
}


def define_flags(*names, **helps):
  """Define the shared flags ``names`` (keys of :data:`SHARED_FLAGS`) on absl's FLAGS.
  ``helps[name]`` replaces a flag's standard help where the command means something
  narrower by it."""
  unknown = set(names) - set(SHARED_FLAGS)
  if unknown:
    raise ValueError(f'no shared flag {sorted(unknown)}')
  for name in names:
    kind, default, help_, *choices = SHARED_FLAGS[name]
    help_ = helps.get(name, help_)
    if kind == 'enum':
      flags.DEFINE_enum(name, default, list(choices[0]), help_)
    elif kind == 'integer':
      flags.DEFINE_integer(name, default, help_)
    else:
      flags.DEFINE_string(name, default, help_)


def command_flags():
  """Names of the flags the running command defines (absl's own left out)."""
  return sorted({f.name for module, fs in flags.FLAGS.flags_by_module_dict().items()
                 if not module.startswith('absl') for f in fs})


def suggest_flag(name, known) -> str:
  """' (did you mean --X?)' for an unknown flag, or ''.

  A known flag that starts with the typed name or that the typed name starts with
  (``--output`` -> ``--out``, ``--check`` -> ``--checkpoint``) is taken first, then
  the closest by edit similarity.
  """
  name = str(name).lstrip('-').split('=')[0]
  if name.startswith('no') and name[2:] in known:
    return ''
  pre = [k for k in known if len(k) >= 3 and len(name) >= 3
         and (k.startswith(name) or name.startswith(k))]
  close = sorted(pre, key=lambda k: abs(len(k) - len(name))) or \
      difflib.get_close_matches(name, known, n=1, cutoff=0.6)
  return f' (did you mean --{close[0]}?)' if close else ''
