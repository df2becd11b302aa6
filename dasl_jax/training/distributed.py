"""Several processes (hosts) as one run: ``jax.distributed.initialize`` from flags or env.

Each value comes from its flag, else its environment variable, else JAX's
cluster auto-detection (SLURM, Open MPI, TPU pods, Kubernetes JobSets):

=============================  =========================  ===========================
flag                           environment variable       meaning
=============================  =========================  ===========================
``--config.train.coordinator_address``  ``JAX_COORDINATOR_ADDRESS``  ``host:port`` of process 0
``--config.train.num_processes``        ``JAX_NUM_PROCESSES``        processes in the run
``--config.train.process_id``           ``JAX_PROCESS_ID``           this process, 0 .. n - 1
=============================  =========================  ===========================

Given nothing at all, JAX detects the cluster; given some of the three and not
the rest (and no cluster to fill them in), one :class:`DaslError` names the
missing flag. On CPU the cross-process collectives are Gloo (JAX's default).
"""
from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from dasl_jax.errors import DaslError

ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS',
       'num_processes': 'JAX_NUM_PROCESSES',
       'process_id': 'JAX_PROCESS_ID'}


def _int(name, value):
  try:
    return int(value)
  except (TypeError, ValueError):
    raise DaslError(f'--config.train.{name} (or ${ENV[name]}) must be an integer, '
                    f'got {value!r}') from None


def settings(train_cfg, environ=None) -> dict:
  """The three values from flags (``''`` / ``-1`` = unset) or the environment.

  Returns:
    dict ``coordinator_address`` (str or None), ``num_processes``, ``process_id``
    (int or None); all None means "let JAX detect the cluster".
  """
  environ = os.environ if environ is None else environ
  addr = str(train_cfg.get('coordinator_address', '') or '') or environ.get(ENV[
      'coordinator_address']) or None
  out = {'coordinator_address': addr}
  for name in ('num_processes', 'process_id'):
    v = train_cfg.get(name, -1)
    v = None if v is None or int(v) < 0 else int(v)
    if v is None and environ.get(ENV[name], '') != '':
      v = _int(name, environ[ENV[name]])
    out[name] = v
  given = [k for k, v in out.items() if v is not None]
  if given and len(given) < 3 and not _cluster_detected():
    missing = [k for k in out if out[k] is None][0]
    raise DaslError(f'--config.train.distributed: --config.train.{missing} (or '
                    f'${ENV[missing]}) is not set and no cluster (SLURM, MPI, TPU) was '
                    f'detected to give it')
  if out['num_processes'] is not None and out['num_processes'] < 1:
    raise DaslError(f'--config.train.num_processes must be >= 1, got {out["num_processes"]}')
  if (out['process_id'] is not None and out['num_processes'] is not None
      and not 0 <= out['process_id'] < out['num_processes']):
    raise DaslError(f'--config.train.process_id must be in 0 .. {out["num_processes"] - 1}, '
                    f'got {out["process_id"]}')
  return out


def _cluster_detected() -> bool:
  try:
    from jax._src import clusters
    return any(c.is_env_present() for c in clusters.ClusterEnv._cluster_types
               if getattr(c, 'opt_in_only_method', False) is False)
  except Exception:  # private API: when it moves, trust what was given
    return False


def initialize(train_cfg):
  """``jax.distributed.initialize`` with :func:`settings` (once per process)."""
  s = settings(train_cfg)
  if jax.distributed.is_initialized():
    return
  try:
    jax.distributed.initialize(**s)
  except (ValueError, RuntimeError) as e:
    msg = ' '.join(str(e).split())[:300]
    raise DaslError(f'--config.train.distributed: jax.distributed.initialize failed ({msg}); '
                    'set --config.train.coordinator_address, num_processes and process_id '
                    '(or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID)') \
        from None


def differing_processes(digests) -> list:
  """Indices of the processes whose digest (a row of ``digests``, (P, K)) differs
  from process 0's."""
  digests = np.asarray(digests)
  return [i for i in range(1, len(digests)) if not np.array_equal(digests[i], digests[0])]


def assert_same_everywhere(value, what: str):
  """Raise DaslError unless every process holds the same JSON-able ``value``.

  A checkpoint's ``data`` item (the loaders' position) is written once, by
  process 0, and read back by all processes on resume: a process whose streams
  stood elsewhere would resume on other batches without a word. Compares SHA-256
  digests of the sorted JSON (one small all-gather); one process: nothing to do.
  """
  if jax.process_count() == 1:
    return
  text = json.dumps(value, sort_keys=True).encode()
  digest = np.frombuffer(hashlib.sha256(text).digest(), np.uint32)
  bad = differing_processes(multihost_utils.process_allgather(digest))
  if bad:
    raise DaslError(f'{what} differs between processes 0 and {bad} (process '
                    f'{jax.process_index()} has {text[:200].decode()}): the processes '
                    'no longer read the same global batches')
