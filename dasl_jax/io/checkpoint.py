"""Model checkpoints: a work directory that inference can restore in one call.

Layout (docs/ARCHITECTURE.md)::

  WORKDIR/model_config.json     ModelConfig
  WORKDIR/param_stats.json      {"mean": [62], "std": [62], "source": str}
  WORKDIR/flags.json            training flags (training runs only)
  WORKDIR/checkpoints/<step>/   Orbax CheckpointManager; item "variables"
                                ({"params", "batch_stats"}) is always there,
                                training adds "train_state" and "data".

:func:`restore` reads only the ``variables`` item, so a training run's manager
(with more items) and a converted model share one format.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from dasl_jax.geometry import params as P
from dasl_jax.errors import DaslError, warn
from dasl_jax.io.files import write_text_atomic
from dasl_jax.models import ModelConfig, create_regressor

VARIABLES = 'variables'
MODEL_CONFIG = 'model_config.json'
PARAM_STATS = 'param_stats.json'
FLAGS = 'flags.json'
CHECKPOINTS = 'checkpoints'


@dataclasses.dataclass
class Restored:
  """What :func:`restore` gives: everything needed to run the regressor."""
  module: Any
  variables: Any
  model_config: ModelConfig
  param_stats: P.ParamStats
  flags: Optional[dict]
  step: int = 0


def checkpoint_manager(workdir, max_to_keep: Optional[int] = None, item_names=None,
                       create: bool = True, **options) -> ocp.CheckpointManager:
  """An Orbax CheckpointManager on ``WORKDIR/checkpoints`` (absolute path).

  Training passes its own ``item_names`` (e.g. variables, train_state, data)
  and saves with ``ocp.args.Composite``; :func:`restore` reads ``variables``.
  """
  directory = Path(workdir).expanduser().resolve() / CHECKPOINTS
  opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create, **options)
  return ocp.CheckpointManager(directory, options=opts, item_names=item_names)


def _to_numpy_tree(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a), tree)


def write_model_files(workdir, model_config: ModelConfig, param_stats: P.ParamStats):
  """Write model_config.json and param_stats.json into ``workdir``."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  write_text_atomic(workdir / MODEL_CONFIG, model_config.to_json() + '\n')
  stats = {'mean': np.asarray(param_stats.mean, np.float64).tolist(),
           'std': np.asarray(param_stats.std, np.float64).tolist(),
           'source': str(param_stats.source)}
  write_text_atomic(workdir / PARAM_STATS, json.dumps(stats, indent=1) + '\n')


def save_model(workdir, model_config: ModelConfig, variables, param_stats: P.ParamStats,
               step: int = 0):
  """Save a model work directory (config, whitening stats, item ``variables``).

  Args:
    workdir: the folder (created).
    model_config: :class:`ModelConfig`.
    variables: ``{'params': ..., 'batch_stats': ...}`` of the regressor.
    param_stats: the whitening its outputs are in.
    step: the checkpoint step number.
  Returns:
    the work directory as a Path.
  """
  workdir = Path(workdir).expanduser().resolve()
  check_variables(model_config, variables, str(workdir))
  if (workdir / CHECKPOINTS / str(step)).exists():
    raise DaslError(f'{workdir}: already holds checkpoint step {step}')
  write_model_files(workdir, model_config, param_stats)
  mngr = checkpoint_manager(workdir)
  try:
    mngr.save(step, args=ocp.args.Composite(
        **{VARIABLES: ocp.args.StandardSave(_to_numpy_tree(variables))}), force=True)
    mngr.wait_until_finished()
  finally:
    mngr.close()
  return workdir


def read_model_config(workdir) -> ModelConfig:
  path = Path(workdir) / MODEL_CONFIG
  if not path.exists():
    raise DaslError(f'{workdir}: not a model checkpoint (no {MODEL_CONFIG}); '
                    'create one with experiments.convert_checkpoint or a training run')
  try:
    d = json.loads(path.read_text())
  except (json.JSONDecodeError, OSError) as e:
    raise DaslError(f'{path}: unreadable JSON ({e})') from None
  if not isinstance(d, dict):
    raise DaslError(f'{path}: expected a JSON object')
  return ModelConfig.from_dict(d, str(path))


def read_param_stats(workdir) -> P.ParamStats:
  path = Path(workdir) / PARAM_STATS
  if not path.exists():
    raise DaslError(f'{workdir}: no {PARAM_STATS} (whitening statistics of the model)')
  try:
    d = json.loads(path.read_text())
    return P._checked(d['mean'], d['std'], d.get('source', str(path)))
  except (json.JSONDecodeError, OSError, KeyError, TypeError) as e:
    raise DaslError(f'{path}: unreadable whitening statistics ({type(e).__name__}: {e})') \
        from None


def expected_shapes(model_config: ModelConfig, image_size: int = 120):
  """The variables' shapes a model config implies: pytree of ShapeDtypeStruct."""
  module = create_regressor(model_config)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, model_config.in_channels),
                           jnp.float32)
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros(x.shape)))


def check_variables(model_config: ModelConfig, variables, source: str):
  """Raise DaslError naming the first variable whose name or shape differs."""
  want = dict(_shape_items(expected_shapes(model_config)))
  got = dict(_shape_items(variables))
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  arch = (f'{model_config.arch} width {model_config.width}'
          if model_config.arch == 'mobilenet' else model_config.arch
          if model_config.arch == 'resnet22' else f'{model_config.arch}{model_config.depth}')
  if missing or extra:
    raise DaslError(f'{source}: variables do not match {arch} with {model_config.in_channels} '
                    f'input channels (missing {missing[:3]}, unexpected {extra[:3]})')
  for k in sorted(want, key=lambda k: (not k.startswith('params/'), k)):
    if want[k] != got[k]:
      raise DaslError(f'{source}: variable {k} has shape {got[k]}, {arch} with '
                      f'{model_config.in_channels} input channels needs {want[k]}')


def _shape_items(tree):
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in leaves:
    yield '/'.join(str(getattr(k, 'key', k)) for k in path), tuple(np.shape(leaf))


def _on_one_device(path):
  """The saved tree's shapes and dtypes on this process's first device: a step written
  by several devices or processes reads on one (None: as saved, when there is no
  metadata to say)."""
  try:
    tree = ocp.StandardCheckpointHandler().metadata(epath.Path(path))
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=one), tree)
  except Exception:  # no or unreadable metadata: the restore below reports it
    return None


def newest_readable(directory, steps, read, warn_fallback: bool = True):
  """The newest checkpoint step that ``read(step)`` reads (the one search for it:
  model restore and training resume).

  Steps are tried from the newest down. A step whose files are corrupt or truncated
  (a disk error, a half-copied folder; Orbax and TensorStore raise many exception
  types) is skipped, with a warning naming it when ``warn_fallback`` and an older
  step is left to try. A :class:`DaslError` from ``read`` is the user's problem
  and propagates.

  Args:
    directory: the ``checkpoints`` folder (messages name ``directory/<step>``).
    steps: step numbers to try.
    read: ``read(step) -> value``.
  Returns:
    ``(step, value, unreadable)``, ``unreadable`` the skipped ``[(step, message)]``
    newest first; ``(None, None, unreadable)`` when no step reads.
  """
  unreadable = []
  order = sorted(steps, reverse=True)
  for i, s in enumerate(order):
    try:
      return s, read(s), unreadable
    except DaslError:
      raise
    except Exception as e:  # noqa: BLE001 (see above)
      # The innermost cause names the file and what is wrong with it; Orbax's own
      # message ends in a repr of a TensorStore method ("See full TensorStore details").
      root = e
      while root.__cause__ is not None:
        root = root.__cause__
      msg = (f'{Path(directory) / str(s)}: cannot read checkpoint '
             f'({type(root).__name__}: {str(root)[:300]})')
      unreadable.append((s, msg))
      if warn_fallback and i + 1 < len(order):
        warn(f'{msg}; falling back to the previous step')
  return None, None, unreadable


def restore(workdir, step: Optional[int] = None) -> Restored:
  """Restore a model work directory.

  Reads ``variables`` at ``step`` (default: the newest readable one,
  :func:`newest_readable`: a corrupt or truncated step is named on stderr and the
  one before it read).

  Returns:
    :class:`Restored` (module, variables, model_config, param_stats, flags, step).
  """
  typed = workdir  # as the user wrote it, for messages (not the resolved symlink)
  workdir = Path(workdir).expanduser().resolve()
  if workdir.is_file():
    if workdir.suffix in ('.pth', '.pt', '.tar'):
      raise DaslError(
          f'{typed}: a PyTorch file, not a model directory; convert it first: python -m '
          f'experiments.convert_checkpoint --from {typed} --kind auto --out DIR, then pass DIR')
    if workdir.suffix == '.onnx':
      raise DaslError(f'{typed}: an ONNX model, not a model directory; pass it as --onnx '
                      f'{typed}')
    raise DaslError(f'{typed}: a file, not a model directory (model_config.json, '
                    f'param_stats.json, {CHECKPOINTS}/)')
  if not workdir.is_dir():
    raise DaslError(f'{workdir}: checkpoint directory not found')
  model_config = read_model_config(workdir)
  param_stats = read_param_stats(workdir)
  flags = None
  if (workdir / FLAGS).exists():
    try:
      flags = json.loads((workdir / FLAGS).read_text())
    except json.JSONDecodeError as e:
      raise DaslError(f'{workdir / FLAGS}: unreadable JSON ({e})') from None
  if not (workdir / CHECKPOINTS).is_dir():
    raise DaslError(f'{workdir}: no {CHECKPOINTS}/ folder (not a model checkpoint)')
  mngr = checkpoint_manager(workdir, create=False)
  try:
    steps = sorted(mngr.all_steps())
    if not steps:
      raise DaslError(f'{workdir / CHECKPOINTS}: no checkpoint steps saved')
    if step is not None and step not in steps:
      raise DaslError(f'{workdir}: no checkpoint step {step} (have {steps})')
    candidates = steps if step is None else [step]

    def read(s):
      # Restore as saved (numpy leaves), then check names and shapes
      # ourselves so a wrong architecture gets a clear message.
      out = mngr.restore(s, args=ocp.args.Composite(**{VARIABLES: ocp.args.StandardRestore(
          _on_one_device(workdir / CHECKPOINTS / str(s) / VARIABLES))}))
      return jax.tree_util.tree_map(np.asarray, out[VARIABLES])

    s, variables, unreadable = newest_readable(workdir / CHECKPOINTS, candidates, read)
    if s is None:
      msgs = [m for _, m in unreadable]
      raise DaslError(msgs[-1] if len(msgs) == 1 else
                      f'{workdir}: no readable checkpoint step ({"; ".join(msgs)})')
    check_variables(model_config, variables, str(workdir / CHECKPOINTS / str(s)))
    return Restored(create_regressor(model_config), variables, model_config,
                    param_stats, flags, s)
  finally:
    mngr.close()


DOT_DTYPES = ('float32', 'bfloat16')


def with_dot_dtype(restored: Restored, dot_dtype: str, what: str = '--dot_dtype') -> Restored:
  """``restored`` with its MobileNetV1 computing the stem and 1x1 products in ``dot_dtype``.

  'float32' returns ``restored`` as it is; 'bfloat16' casts the products' operands
  (float32 sums; ``models.layers._matmul``) on the CPU ('shifted') path, where
  AVX512-BF16 makes batch-128 inference ~1.2x faster (benchmarks/README.md). The
  variables are unchanged. ``what`` names the setting in errors.
  """
  if dot_dtype not in DOT_DTYPES:
    raise DaslError(f'{what}: must be one of {DOT_DTYPES}, got {dot_dtype!r}')
  if dot_dtype == 'float32':
    return restored
  if not hasattr(restored.module, 'dot_dtype'):
    raise DaslError(f'{what} {dot_dtype}: only MobileNetV1 models have this option; this '
                    f'checkpoint holds a {type(restored.module).__name__}')
  return dataclasses.replace(restored, module=restored.module.clone(dot_dtype=jnp.bfloat16))
