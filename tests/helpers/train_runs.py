"""Running ``python -m experiments.train`` in a subprocess for the tests: the command,
its environment, the uninterrupted reference run every command test compares with
(done once per test run), and readers of a work directory."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'experiments' / 'configs' / 'tiny.flags'
# Smaller than tiny.flags' network so the tests stay inside their time budget; no
# progress bar, so that the run's last line on stderr is its own.
TEST_FLAGS = ['--config.train.fake_data=True', '--config.model.resnet_width=4',
              '--config.train.progress=False']


def command(workdir, *flags):
  return [sys.executable, '-m', 'experiments.train', f'--flagfile={TINY}',
          f'--workdir={workdir}', *TEST_FLAGS, *flags]


# Two XLA:CPU settings for every program the tests compile, in pytest and in the commands
# it starts (tests/conftest.py adds them to XLA_FLAGS): compilation is most of the suite's
# time and the tests' programs are small.
# - LLVM at -O0 instead of XLA:CPU's -O2. Measured cold on a 2-core Zen 3: the quick tier
#   218 s at -O0 against 246 s at -O1 (minutes apart; -O1 was itself ~10% under -O2); the
#   tiny reference run 29.9 s wall / 35.5 s CPU against 36.9 / 48.1.
# - XLA:CPU's older elemental emitters instead of its MLIR fusion emitters
#   (--xla_cpu_use_fusion_emitters=false): a perf profile of compiling a train step showed
#   the time spread over MLIR's pattern rewriting and attribute uniquing, run once per
#   fusion. Measured cold on the same machine: the MobileNet x0.25 2DASL train step
#   compiled in 7.4 s instead of 12.2, the tiny reference run 19.7 s wall / 22.5 s CPU
#   instead of 26.2 / 34.4, the quick tier 179 s (user 5m28) instead of 198-218 (6m01-6m40).
# No fast-math at any level, and every test compares programs compiled with these flags
# (or against numpy references with tolerances that hold under either emitter).
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
# For the few commands that run longer than they compile (the ablation study's smoke
# run evaluates 1,998 crops four times: 251 s at -O0 against 193 s at -O1).
RUN_HEAVY_XLA_FLAGS = '--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false'
# Its in-process form, for a test's own jitted functions that run longer than they compile
# (``jax.jit(f, compiler_options=RUN_HEAVY_COMPILER_OPTIONS)``; the emitter choice is
# process-wide and stays the tests'): the critic-design study's 100 critic steps.
RUN_HEAVY_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


def heavy_env():
  """This process's environment with ``RUN_HEAVY_XLA_FLAGS`` as the only XLA flags."""
  return dict(os.environ, XLA_FLAGS=RUN_HEAVY_XLA_FLAGS)


def env(cache_dir):
  """Subprocess environment: the repository on the path, the test run's persistent
  compilation cache (``cache_dir()``), so a step compiled once is loaded after that, and
  ``TEST_XLA_FLAGS`` only (no host-device count or other flag of the caller)."""
  e = dict(os.environ, PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=str(cache_dir),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', XLA_FLAGS=TEST_XLA_FLAGS)
  return e


def run(workdir, *flags, cache_dir, timeout=900):
  return subprocess.run(command(workdir, *flags), cwd=REPO, env=env(cache_dir),
                        capture_output=True, text=True, timeout=timeout)


_SESSION = {}


def session_dir():
  """The test run's scratch folder shared by the command tests: ``$DASL_TEST_SESSION_DIR``
  (``tests/conftest.py`` makes one per run, shared by pytest-xdist's workers), or
  outside pytest a temporary folder of this process."""
  import atexit
  import shutil
  import tempfile
  if 'dir' not in _SESSION:
    chosen = os.environ.get('DASL_TEST_SESSION_DIR')
    if chosen:
      _SESSION['dir'] = Path(chosen)
    else:
      _SESSION['dir'] = Path(tempfile.mkdtemp(prefix='dasl_train_tests_'))
      atexit.register(shutil.rmtree, _SESSION['dir'], ignore_errors=True)
  return _SESSION['dir']


def cache_dir():
  """The test run's persistent compilation cache (tests/conftest.py chooses it), or
  outside pytest a folder of this process."""
  return Path(os.environ.get('JAX_COMPILATION_CACHE_DIR') or session_dir() / 'jax_cache')


def reference_run():
  """The tiny run, uninterrupted, done once per test run: (workdir, CompletedProcess).

  The first caller runs it under a lock on the session folder and records its result
  there; every other caller, in this process or another pytest-xdist worker, waits for
  the lock and reads that record (a reference that failed is recorded too, and every
  test that uses it fails on its return code)."""
  import fcntl
  import json
  if 'ref' not in _SESSION:
    wd = session_dir() / 'reference'
    record = session_dir() / 'reference.json'
    with open(session_dir() / 'reference.lock', 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
      if not record.exists():
        r = run(wd, cache_dir=cache_dir())
        record.write_text(json.dumps({'args': r.args, 'returncode': r.returncode,
                                      'stdout': r.stdout, 'stderr': r.stderr}))
      rec = json.loads(record.read_text())
    _SESSION['ref'] = (wd, subprocess.CompletedProcess(rec['args'], rec['returncode'],
                                                       rec['stdout'], rec['stderr']))
  return _SESSION['ref']


def checkpoint_steps(workdir):
  """The complete checkpoint steps in ``workdir/checkpoints`` (sorted; [] if none)."""
  d = Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def logged_steps(workdir):
  """Steps whose training losses are in ``log.jsonl`` (a line being written is skipped)."""
  import json
  f = Path(workdir) / 'log.jsonl'
  out = []
  for line in (f.read_text().splitlines() if f.exists() else []):
    try:
      rec = json.loads(line)
    except ValueError:
      continue
    if 'total' in rec:
      out.append(rec['step'])
  return out
