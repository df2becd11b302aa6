"""The map is true: every import of the package follows the order of its wings, and
every module has its line in docs/ARCHITECTURE.md's module map."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'dasl_jax'
# A wing may import its own modules and those of a lower rank, never another wing of
# the same rank (docs/ARCHITECTURE.md, first paragraph).
RANK = {'errors': 0, 'assets': 0, 'cpu_runtime': 0,
        'geometry': 1,
        'face_model': 2, 'models': 2,
        'losses': 3,
        'io': 4, 'viz': 4,
        'inference': 5, 'data': 6, 'evaluation': 7, 'training': 8,
        'cli': 9}
# Modules that import nothing of the package, so every wing may use them.
FOUNDATION = {'dasl_jax.io.files': 'writes small files whole, makes values JSON-able'}


def _wing(module: str):
  """'dasl_jax.training.loop' -> 'training'; the package itself -> None."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 and parts[0] == 'dasl_jax' else None


def imported_wings(source: str, package_module: str):
  """``(wing, line)`` of every dasl_jax import in ``source`` (in functions too)."""
  out = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = ([f'{node.module}.{a.name}' for a in node.names] if node.module == 'dasl_jax'
               else [node.module])
    elif isinstance(node, ast.ImportFrom):  # relative: resolve against the module
      base = package_module.split('.')[:-node.level]
      names = ['.'.join(base + ([node.module] if node.module else []))]
    else:
      continue
    out += [(_wing(n), node.lineno) for n in names
            if _wing(n) and not any(n == f or n.startswith(f + '.') for f in FOUNDATION)]
  return out


def violations(source: str, module: str):
  """Imports of ``module`` (dotted) against the order of the wings."""
  own = _wing(module)
  bad = []
  for wing, line in imported_wings(source, module):
    if wing not in RANK:
      bad.append(f'{module}:{line} imports {wing}, a wing without a rank')
    elif wing != own and RANK[wing] >= RANK[own]:
      bad.append(f'{module}:{line} imports {wing} (rank {RANK[wing]} >= {own} {RANK[own]})')
  return bad


def _modules():
  for path in sorted(PACKAGE.rglob('*.py')):
    yield path, '.'.join(path.relative_to(ROOT).with_suffix('').parts)


def test_the_checker_sees_an_upward_import():
  assert violations('from dasl_jax.training import loop\n', 'dasl_jax.evaluation.x') == [
      'dasl_jax.evaluation.x:1 imports training (rank 8 >= evaluation 7)']
  assert violations('def f():\n  from dasl_jax import io\n', 'dasl_jax.viz.x') == [
      'dasl_jax.viz.x:2 imports io (rank 4 >= viz 4)']
  assert violations('import dasl_jax.geometry.camera\nfrom dasl_jax.errors import warn\n',
                    'dasl_jax.models.x') == []
  assert violations('from ..training import loop\n', 'dasl_jax.data.x') == [
      'dasl_jax.data.x:1 imports training (rank 8 >= data 6)']
  assert violations('from dasl_jax.io.files import jsonable\n', 'dasl_jax.geometry.x') == []


def test_foundation_modules_import_nothing_of_the_package():
  for module in FOUNDATION:
    path = ROOT / (module.replace('.', '/') + '.py')
    assert imported_wings(path.read_text(), module) == []


def test_every_wing_has_a_rank():
  wings = {p.relative_to(PACKAGE).parts[0].removesuffix('.py') for p in PACKAGE.iterdir()
           if (p.suffix == '.py' or p.is_dir()) and not p.name.startswith('__')}
  assert wings == set(RANK)


def test_imports_follow_the_order_of_the_wings():
  bad = []
  for path, module in _modules():
    bad += violations(path.read_text(), module)
  assert bad == []


def _mapped_files():
  """The files the module map names: a row's first cell lists ``dasl_jax/dir/a.py``
  and maybe more names of the same folder (``b.py``)."""
  text = (ROOT / 'docs' / 'ARCHITECTURE.md').read_text()
  out = set()
  for line in text.splitlines():
    m = re.match(r'\| (`[^|]*`) \|', line)
    if not m:
      continue
    names = re.findall(r'`([^`]+)`', m.group(1))
    if not names or not names[0].startswith('dasl_jax/'):
      continue
    folder = Path(names[0]).parent
    out.update(str(Path(n) if n.startswith('dasl_jax/') else folder / n) for n in names)
  return out


@pytest.mark.parametrize('skip', ['__init__.py'])
def test_every_module_has_its_line_in_the_map(skip):
  mapped = _mapped_files()
  missing = [str(p.relative_to(ROOT)) for p, _ in _modules()
             if p.name != skip and str(p.relative_to(ROOT)) not in mapped]
  assert missing == []
  assert 'dasl_jax/training/loop.py' in mapped and 'dasl_jax/io/meshes.py' in mapped


def test_test_helpers_live_in_their_own_package():
  """Tests import shared code from tests/helpers only (never another test module or
  conftest), and no helper is named like a package module."""
  tests = ROOT / 'tests'
  package_names = {p.stem for p in PACKAGE.rglob('*.py')}
  helpers = {p.stem for p in (tests / 'helpers').glob('*.py')} - {'__init__'}
  assert helpers and not helpers & package_names, helpers & package_names
  bad = []
  for path in sorted(tests.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] + [f'{node.module}.{a.name}' for a in node.names]
               if isinstance(node, ast.ImportFrom) else [])
      for n in names:
        parts = n.split('.')
        if parts[0] == 'tests' and ('conftest' in parts or any(
            p.startswith('test_') for p in parts)):
          bad.append(f'{path.relative_to(ROOT)}:{node.lineno} imports {n}')
  assert bad == []
