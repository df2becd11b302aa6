"""Run logs: JSON lines (``log.jsonl``), TensorBoard event files, the run's flags.

The first JSON line of each start is ``{"config": <resolved config>, "resumed": bool}``;
then one record per logging step: ``step``, the training metrics (losses, ``lr``,
norms, critic accuracies) averaged over the ``steps_averaged`` steps since the last
record (the mean is taken on device), ``images_per_s`` over those steps, and at
evaluation steps the held-out / validation metrics (``heldout_nme``, ``val21_nme``,
...) of the state at that step. ``flags.json`` holds the resolved flags
(:func:`record_flags`), ``flags_history.jsonl`` the ones a resume replaced.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from dasl_jax.errors import warn
from dasl_jax.io import checkpoint
from dasl_jax.io.files import jsonable, write_text_atomic

LOG_FILE = 'log.jsonl'


class MetricLogger:
  """Append metrics to ``WORKDIR/log.jsonl`` and TensorBoard (``WORKDIR/tb``)."""

  def __init__(self, workdir, config_dict: dict, tensorboard: bool = True):
    self.workdir = Path(workdir)
    self.path = self.workdir / LOG_FILE
    self.writer = None
    resumed = self.path.exists() and self.path.stat().st_size > 0
    with open(self.path, 'a') as f:
      f.write(json.dumps({'config': config_dict, 'resumed': resumed}) + '\n')
    if tensorboard:
      # Here: tensorboardX brings protobuf (~1 s) and only process 0 writes a log.
      from tensorboardX import SummaryWriter
      self.writer = SummaryWriter(str(self.workdir / 'tb'))

  def write(self, step: int, scalars: dict):
    record = {'step': int(step)}
    record.update({k: jsonable(v) for k, v in scalars.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    if self.writer is not None:
      for k, v in scalars.items():
        v = jsonable(v)
        if isinstance(v, (int, float)):
          self.writer.add_scalar(k, v, int(step))
      self.writer.flush()

  def close(self):
    if self.writer is not None:
      self.writer.close()


def _flat(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def record_flags(workdir, config):
  """Write ``flags.json``; when it already holds other values (a resumed run with
  changed flags), warn with what changed and append the old flags to
  ``flags_history.jsonl`` (with the time and the step reached), so no run's
  settings are lost."""
  path = Path(workdir) / checkpoint.FLAGS
  new_text = config.to_json_best_effort(indent=1) + '\n'
  if path.exists():
    try:
      old = json.loads(path.read_text())
    except json.JSONDecodeError:
      old = None
    new = json.loads(new_text)
    if old is not None and old != new:
      a, b = _flat(old), _flat(new)
      changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
      shown = ', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in changed[:6])
      more = f' (+{len(changed) - 6} more)' if len(changed) > 6 else ''
      warn(f'{workdir} was started with other flags; resuming with {shown}{more}. '
           'The previous flags are kept in flags_history.jsonl')
      ckpts = Path(workdir) / checkpoint.CHECKPOINTS
      steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) \
          if ckpts.is_dir() else []
      with open(Path(workdir) / 'flags_history.jsonl', 'a') as f:
        f.write(json.dumps({'replaced_at': time.strftime('%Y-%m-%dT%H:%M:%S'),
                            'latest_step': steps[-1] if steps else None,
                            'changed': changed, 'flags': old}) + '\n')
  write_text_atomic(path, new_text)
