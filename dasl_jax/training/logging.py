"""Run logs: JSON lines (``log.jsonl``) and TensorBoard event files.

The first JSON line is ``{"config": <resolved config>}``; then one record per
logging step: ``step``, the losses, ``images_per_s``, ``lr``, and held-out
``heldout_nme`` when measured.
"""
from __future__ import annotations

import json
from pathlib import Path

from dasl_jax.io.files import jsonable

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
