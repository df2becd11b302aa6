"""The commands' preamble: where the persistent compilation cache goes."""
from pathlib import Path

import jax

from dasl_jax import cli


def test_compilation_cache_dir_rules(tmp_path):
  home = str(Path('~/.cache').expanduser())
  assert cli.compilation_cache_dir({}) == Path(home) / 'dasl_jax' / 'xla'
  assert cli.compilation_cache_dir({'XDG_CACHE_HOME': '/c'}) == Path('/c/dasl_jax/xla')
  # JAX's own variable wins; empty means no cache.
  assert cli.compilation_cache_dir({'JAX_COMPILATION_CACHE_DIR': '/j',
                                    'XDG_CACHE_HOME': '/c'}) == Path('/j')
  assert cli.compilation_cache_dir({'JAX_COMPILATION_CACHE_DIR': ''}) is None


def test_use_compilation_cache_sets_jax_and_survives_a_read_only_home(tmp_path, capsys):
  before = jax.config.jax_compilation_cache_dir
  try:
    got = cli.use_compilation_cache({'XDG_CACHE_HOME': str(tmp_path)})
    assert got == tmp_path / 'dasl_jax' / 'xla' and got.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(got)
    blocked = tmp_path / 'file'
    blocked.write_text('')  # a file where the folder should go: mkdir fails
    assert cli.use_compilation_cache({'XDG_CACHE_HOME': str(blocked)}) is None
    assert 'compilation cache off' in capsys.readouterr().err
    assert cli.use_compilation_cache({'JAX_COMPILATION_CACHE_DIR': ''}) is None
  finally:
    jax.config.update('jax_compilation_cache_dir', before)


def test_shared_command_flags_are_defined_only_in_cli():
  """--checkpoint, --bfm, --convention, --dot_dtype, --bootstrap_iters and the detector
  flags have one definition (cli.SHARED_FLAGS); a command that defined its own copy
  could drift from the others (another default, other choices)."""
  import ast
  root = Path(__file__).resolve().parent.parent
  found = []
  for path in sorted((root / 'experiments').glob('*.py')) + sorted((root / 'benchmarks').glob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr.startswith('DEFINE_') and node.args
          and isinstance(node.args[0], ast.Constant) and node.args[0].value in cli.SHARED_FLAGS):
        found.append(f'{path.name}: {node.args[0].value}')
  assert found == []
  assert sorted(cli.SHARED_FLAGS) == sorted(['checkpoint', 'bfm', 'convention', 'dot_dtype',
                                             'bootstrap_iters', 'detector', 'faceboxes_weights'])


def test_unknown_flags_get_a_suggestion():
  known = ['out', 'checkpoint', 'aflw2000_images', 'input', 'detect_every', 'track']
  assert cli.suggest_flag('output', known) == ' (did you mean --out?)'
  assert cli.suggest_flag('--checkpointt', known) == ' (did you mean --checkpoint?)'
  assert cli.suggest_flag('aflw_images', known) == ' (did you mean --aflw2000_images?)'
  assert cli.suggest_flag('zzz', known) == ''
  assert cli.suggest_flag('notrack', known) == ''  # absl's --noFLAG form is not unknown
