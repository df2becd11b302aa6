"""write_text_atomic: the old file or the new one, never a truncated one."""
import os

import pytest

from dasl_jax.io import files


def test_replaces_whole_file(tmp_path):
  p = tmp_path / 'flags.json'
  files.write_text_atomic(p, '{"a": 1}\n')
  files.write_text_atomic(p, '{"a": 2}\n')
  assert p.read_text() == '{"a": 2}\n'
  assert sorted(x.name for x in tmp_path.iterdir()) == ['flags.json']


def test_failure_mid_write_keeps_old_file(tmp_path, monkeypatch):
  """A write that dies after some bytes reached the disk (here: fsync fails, standing
  in for a kill) must leave the previous content and no temporary file."""
  p = tmp_path / 'model_config.json'
  p.write_text('old\n')

  def boom(fd):
    raise OSError('disk gone')

  monkeypatch.setattr(os, 'fsync', boom)
  with pytest.raises(OSError, match='disk gone'):
    files.write_text_atomic(p, 'new content that never lands\n')
  assert p.read_text() == 'old\n'
  assert sorted(x.name for x in tmp_path.iterdir()) == ['model_config.json']


def test_jsonable_makes_valid_json():
  """Every kind a loader state or metric record holds, against values written by hand."""
  import json
  import numpy as np
  x = {1: (np.int64(3), np.float32(0.5)), 'b': b'\x00\xff', 'n': float('nan'),
       'i': np.array([1.0, -np.inf]), 'ok': [True, None, 'text', 2], 'o': object}
  got = files.jsonable(x)
  assert got == {'1': [3, 0.5], 'b': '\x00\xff', 'n': 'nan', 'i': [1.0, '-inf'],
                 'ok': [True, None, 'text', 2], 'o': str(object)}
  assert json.loads(json.dumps(got, allow_nan=False)) == got
  assert got['b'].encode('latin1') == b'\x00\xff'  # bytes survive the round trip
