"""pytest's hooks and shared fixtures (helpers live in ``tests/helpers``).

The real research files are never in the repository; tests that need them use
``tests.helpers.asset_marks.requires_assets('bfm', 'u_shp.npy')`` and skip with a
clear reason when the folder (``$DASL_ASSETS``, default ``../shared/assets``) does not
have them.
"""
import os
import tempfile

import numpy as np
import pytest

from dasl_jax.assets import assets_dir
from dasl_jax.cli import compilation_cache_dir


_CREATED = []  # folders made for this run (a fresh cache, the scratch folder), removed at its end


def pytest_unconfigure(config):
  del config
  import shutil
  for folder in _CREATED:
    shutil.rmtree(folder, ignore_errors=True)


def pytest_configure(config):
  """One persistent compilation cache for the whole test run, in-process tests and the
  commands the tests start alike (they inherit ``JAX_COMPILATION_CACHE_DIR``): a step or
  network compiled once is loaded, not compiled again, by every later test and process
  that builds the same program. ``$DASL_TEST_CACHE``: the folder (kept between runs,
  so a second run loads what the first compiled); unset, ``~/.cache/dasl_jax/xla-tests``
  (beside the commands' own cache); empty, a fresh folder per run (a cold run, as on a
  new CI machine). Entries are keyed by the program and the JAX version, never stale.

  With pytest-xdist (``-n auto``) the first process (the controller) chooses the folders
  and writes them into the environment before it starts its workers, so the workers
  share the cache and one scratch folder (``$DASL_TEST_SESSION_DIR``: the training
  commands' uninterrupted reference run is made once, by whichever worker needs it
  first; ``tests/helpers/train_runs.py``).
  """
  del config
  chosen = os.environ.get('DASL_TEST_CACHE')
  if chosen is None:
    base = compilation_cache_dir({k: v for k, v in os.environ.items()
                                  if k != 'JAX_COMPILATION_CACHE_DIR'})
    chosen = str(base.parent / 'xla-tests')
  if not chosen:
    chosen = tempfile.mkdtemp(prefix='dasl_test_xla_')
    _CREATED.append(chosen)
  os.makedirs(chosen, exist_ok=True)
  os.environ['DASL_TEST_CACHE'] = chosen  # xdist workers inherit the controller's choice
  if not os.environ.get('DASL_TEST_SESSION_DIR'):
    os.environ['DASL_TEST_SESSION_DIR'] = tempfile.mkdtemp(prefix='dasl_test_session_')
    _CREATED.append(os.environ['DASL_TEST_SESSION_DIR'])
  os.environ['JAX_COMPILATION_CACHE_DIR'] = chosen
  # The tests' XLA flags (LLVM -O0 and XLA:CPU's older emitters: why in
  # tests/helpers/train_runs.py), inherited by the workers and the commands the tests start.
  from tests.helpers.train_runs import TEST_XLA_FLAGS
  if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + TEST_XLA_FLAGS).strip()
  # Every program, however quick to compile: the tests compile hundreds of small ones.
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  import jax  # reads the variables above when first imported; set them too if it was
  jax.config.update('jax_compilation_cache_dir', chosen)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_xdist_auto_num_workers(config):
  """``-n auto``: one worker per core, but at most one per 4 GiB of memory (a worker
  compiling a ResNet train step holds about 2 GiB) and at most 8 (beyond that the
  longest single test, not the worker count, sets the run's time)."""
  del config
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  try:
    mem = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError, AttributeError):
    mem = 8 << 30
  return max(1, min(cores or 1, mem // (4 << 30), 8))


@pytest.fixture
def assets():
  """The assets folder (tests using it should also carry a ``requires_assets`` marker)."""
  return assets_dir()


@pytest.fixture
def rng():
  """A fresh seeded numpy generator per test."""
  return np.random.default_rng(0)


def _source(obj):
  import inspect
  obj = getattr(obj, '__wrapped__', obj)
  for attr in ('_get_wrapped_function', '_fixture_function'):  # pytest fixture wrappers
    inner = getattr(obj, attr, None)
    if inner is not None:
      obj = inner() if callable(inner) and attr.startswith('_get') else inner
  try:
    return inspect.getsource(obj)
  except (OSError, TypeError):
    return ''


def _starts_processes(module):
  """Names, in the module's namespace, of functions and fixtures of the test
  package whose code starts a subprocess, directly or through another of them."""
  import re
  srcs = {}
  for name, obj in vars(module).items():
    owner = getattr(getattr(obj, '__wrapped__', obj), '__module__', '') or ''
    if callable(obj) and (owner.startswith('tests') or owner == module.__name__):
      src = _source(obj)
      if src:
        srcs[name] = src
  names = {n for n, src in srcs.items() if 'subprocess.' in src or 'Popen(' in src}
  changed = True
  while changed:  # callers of callers
    changed = False
    for n, src in srcs.items():
      if n not in names and any(re.search(rf'\b{h}\(', src) for h in names):
        names.add(n)
        changed = True
  return names


def pytest_collection_modifyitems(config, items):
  """Mark every test that starts a subprocess (itself or through a helper of its
  module, e.g. a command runner) ``slow``: ``-m 'not slow'`` runs the in-process
  tests only, less the few marked ``slow`` by hand for their size (each says why).
  CI runs all of them."""
  import inspect
  import re
  cache = {}
  for item in items:
    fn = getattr(item, 'function', None)
    mod = getattr(item, 'module', None)
    if fn is None or mod is None:
      continue
    if mod not in cache:
      cache[mod] = _starts_processes(mod)
    try:
      src = inspect.getsource(fn)
    except (OSError, TypeError):
      continue
    helpers = cache[mod]
    if ('subprocess.' in src or any(re.search(rf'\b{h}\(', src) for h in helpers)
        or helpers & set(getattr(item, 'fixturenames', ()))):
      item.add_marker(pytest.mark.slow)
  # The slow tests first (stable order otherwise): with pytest-xdist the commands and the
  # experiment-sized tests start at once, and the run ends on short tests, not with one
  # worker finishing a long one while the others sit idle.
  items[:] = sorted(items, key=lambda item: item.get_closest_marker('slow') is None)
