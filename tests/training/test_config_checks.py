"""Config values out of range, unknown fields, changed flags on resume, and what a
model config shows: each is one line (or one warning) that names the flag."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dasl_jax.training import config as C
from dasl_jax.errors import DaslError
from dasl_jax.models import ModelConfig
from dasl_jax.training.logging import record_flags

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('path,value,msg', [
    ('data.batch_size_3d', 0, 'an integer >= 1'),
    ('optim.lr', -0.1, 'a positive number'),
    ('optim.momentum', 1.0, 'in [0, 1)'),
    ('train.ema_decay', 1.5, 'in [0, 1)'),
    ('model.in_channels', 5, '3 or 4'),
    ('loss.w_cyc', -1.0, '>= 0'),
])
def test_out_of_range_names_the_flag(path, value, msg):
  c = C.default_config()
  section, field = path.split('.')
  c[section][field] = value
  with pytest.raises(DaslError, match=rf'^--config\.{path}={value!r}: must be .*'):
    C.check_config(c)
  try:
    C.check_config(c)
  except DaslError as e:
    assert msg in str(e)


def test_default_and_shipped_configs_pass():
  C.check_config(C.default_config())


def test_unknown_field_suggestions(tmp_path):
  ff = tmp_path / 'x.flags'
  ff.write_text('# a comment\n--config.train.numsteps=3\n')
  assert 'did you mean --config.train.num_steps?' in C.unknown_field_message([f'--flagfile={ff}'])
  assert 'did you mean --config.optim.lr?' in C.unknown_field_message(
      ['--config.optim.learning_rate=0.1'])
  assert C.unknown_field_message(['--config.optim.lr=0.1']) == ''


def test_train_command_lines():
  base = [sys.executable, '-m', 'experiments.train', '--flagfile=experiments/configs/tiny.flags',
          '--workdir', '/nonexistent/should_not_be_created']
  for extra, want in ((['--config.data.batch_size_3d=0'],
                       'error: --config.data.batch_size_3d=0: must be an integer >= 1'),
                      (['--config.optim.learning_rate=0.1'],
                       'error: bad flag: --config.optim.learning_rate: no such field (did you '
                       'mean --config.optim.lr?)')):
    r = subprocess.run(base + extra, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == want, r.stderr
    assert 'Traceback' not in r.stderr


def test_resume_with_changed_flags_warns_and_keeps_history(tmp_path, capsys):
  c = C.default_config()
  record_flags(tmp_path, c)
  assert not (tmp_path / 'flags_history.jsonl').exists()
  record_flags(tmp_path, c)  # same flags: nothing to say
  assert capsys.readouterr().err == ''
  c2 = C.default_config()
  c2.optim.lr = 0.01
  c2.train.num_steps = 2000
  record_flags(tmp_path, c2)
  err = capsys.readouterr().err
  assert err.startswith('warning: ') and 'optim.lr: 0.004 -> 0.01' in err
  assert 'train.num_steps: 1000 -> 2000' in err
  hist = [json.loads(l) for l in (tmp_path / 'flags_history.jsonl').read_text().splitlines()]
  assert len(hist) == 1 and hist[0]['flags']['optim']['lr'] == 0.004
  assert sorted(hist[0]['changed']) == ['optim.lr', 'train.num_steps']
  assert json.loads((tmp_path / 'flags.json').read_text())['optim']['lr'] == 0.01


def test_model_config_shows_its_own_fields():
  m = ModelConfig(arch='mobilenet', depth=50)
  assert 'depth=' not in repr(m) and 'width=0.5' in repr(m)
  assert 'depth' not in json.loads(m.to_json())
  r = ModelConfig(arch='resnet', depth=50, width=2.0)
  assert 'depth=50' in repr(r) and ' width=' not in repr(r)
  assert ModelConfig.from_dict(json.loads(r.to_json())) == r


def test_config_from_args_reads_flagfiles_like_the_command(tmp_path):
  """Flagfile lines and later overrides, with the values written out by hand."""
  f = tmp_path / 'run.flags'
  f.write_text('# a comment\n--config.model.arch=resnet\n--config.model.depth=34\n'
               '--config.critic.hidden=(16, 8)\n--config.train.num_steps=10\n')
  c = C.config_from_args([f'--flagfile={f}', '--config.train.num_steps=20'])
  assert (c.model.arch, c.model.depth, tuple(c.critic.hidden)) == ('resnet', 34, (16, 8))
  assert c.train.num_steps == 20  # the command line after the flagfile wins
  assert c.optim.lr == C.default_config().optim.lr  # untouched fields keep their defaults
  with pytest.raises(DaslError, match=r'--config.data.batch_size: no such field \(did you '
                     r'mean --config.data.batch_size_3d\?\)'):
    C.config_from_args(['--config.data.batch_size=4'])
  with pytest.raises(DaslError, match='Unable to open flagfile'):
    C.config_from_args([f'--flagfile={tmp_path / "missing.flags"}'])
