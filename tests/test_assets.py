"""$DASL_ASSETS in flag values: expanded to the assets folder, set or not."""
from dasl_jax import assets
from dasl_jax.training.config import default_config


def test_expand_with_and_without_the_variable(monkeypatch, tmp_path):
  monkeypatch.setenv('DASL_ASSETS', str(tmp_path))
  assert assets.expand('$DASL_ASSETS/bfm') == f'{tmp_path}/bfm'
  assert assets.expand('${DASL_ASSETS}/x/y.pkl') == f'{tmp_path}/x/y.pkl'
  assert assets.expand('runs/plain') == 'runs/plain'
  monkeypatch.delenv('DASL_ASSETS')
  default = str(assets.assets_dir())
  assert default.endswith('shared/assets')
  assert assets.expand('$DASL_ASSETS/bfm') == default + '/bfm'


def test_expand_config_walks_sections(monkeypatch, tmp_path):
  monkeypatch.setenv('DASL_ASSETS', str(tmp_path))
  c = default_config()
  c.data.param_stats = '$DASL_ASSETS/pretrained/s.pkl'
  c.data.augment.enabled = False
  c.eval.aflw2000_dir = '${DASL_ASSETS}/aflw2000-3d'
  e = assets.expand_config(c)
  assert e.data.param_stats == f'{tmp_path}/pretrained/s.pkl'
  assert e.eval.aflw2000_dir == f'{tmp_path}/aflw2000-3d'
  assert e.data.augment.enabled is False and e.optim.lr == c.optim.lr
  assert c.data.param_stats.startswith('$DASL_ASSETS')  # the input is left alone
