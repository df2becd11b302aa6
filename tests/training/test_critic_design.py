"""The self-critic must judge parameters, not image domains (issue 12).

The study's real pairs are aflw-wild crops with the teacher's labels and its
fake pairs are aflw-wild crops with the regressor's predictions: the images on
both sides come from one distribution. This test trains the critic exactly as
the step does (same module, same loss, same optimiser) but hands every pair a
parameter vector drawn from the pooled batch, independent of the pair's side,
so only the image could tell real from fake. On the study's streams
(``source_3d=teacher`` next to ``source_wild=aflw``) its accuracy on held-out
pairs must stay at chance. The control gives the same critic the same budget
on the first ablation's streams (rendered BFM faces as the 3D side, the same
AFLW photographs as the wild side), which it must separate: without that, a
critic too weak to learn anything would pass the first half.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dasl_jax.models import inputs
from dasl_jax import losses
from dasl_jax.training.config import default_config
from dasl_jax.data import pipeline
from dasl_jax.data import readers as R
from dasl_jax.models.critic import SelfCritic
from dasl_jax.training import optimizers
from dasl_jax.training import state as state_lib
from tests.helpers.asset_marks import asset_path, requires_assets
from tests.helpers.train_runs import RUN_HEAVY_COMPILER_OPTIONS

# Experiment-sized (a teacher labels 500 real crops, then 100 critic steps per arm, compiled
# at -O1 rather than the tests' -O0: 73 s for both tests alone on a 2-core Zen 3, 94 s with
# everything at -O0): the whole suite runs them, -m 'not slow' does not.
pytestmark = [pytest.mark.assets, pytest.mark.slow]

BATCH = 32
TRAIN_BATCHES, TEST_BATCHES = 10, 4
STEPS = 100
# The step's critic learning rate is 1e-4 over thousands of steps; this test has 100,
# so both arms use 1e-3 (same for both: the control shows the budget is enough).
LR = 1e-3


def _data_cfg(tmp_path, source_3d):
  c = default_config()
  d = c.data
  d.convention = 'v2'
  d.param_stats = str(asset_path('pretrained', 'param_mean_std_62d_120x120.pkl'))
  d.source_wild = 'aflw'
  d.skip_bad_rows = True
  d.heldout = 'none'
  d.batch_size_3d = d.batch_size_wild = BATCH
  d.num_threads = 2
  d.prefetch = 8
  n = BATCH * (TRAIN_BATCHES + TEST_BATCHES)
  if source_3d == 'teacher':
    from experiments.convert_checkpoint import convert
    teacher = convert(asset_path('pretrained', 'mb05_120x120.pth'), tmp_path / 'mb05')
    names = R.read_list(asset_path('aflw-wild', 'list.txt'))
    # A random subset, so the teacher's pool is distributed like the wild pool (the
    # study labels every training crop; this labels enough for one epoch of batches).
    pick = np.random.default_rng(0).choice(len(names), n + 64, replace=False)
    (tmp_path / 'teacher.txt').write_text('\n'.join(names[i] for i in sorted(pick)) + '\n')
    d.source_3d = 'teacher'
    d.teacher_checkpoint = str(teacher)
    d.teacher_list = str(tmp_path / 'teacher.txt')
    d.teacher_images = str(asset_path('aflw-wild', 'images'))
  else:
    d.source_3d = 'synthetic_bfm'
    d.synthetic_size_3d = n + 64
    d.synthetic_size_wild = d.synthetic_size_heldout = 8
    d.synthetic_stats_samples = 1000
  return c


def _pairs(cfg, seed=0):
  """(real images, fake images, pooled params): the first epoch of both streams, whose
  examples are all distinct, so the held-out batches were never trained on."""
  data = pipeline.build_data(cfg.data, seed)
  real, fake, params = [], [], []
  with data.streams as streams:
    for _ in range(TRAIN_BATCHES + TEST_BATCHES):
      b3, bw = streams.next()
      real.append(np.asarray(inputs.normalize_image(b3['image'])))
      fake.append(np.asarray(inputs.normalize_image(bw['image'])))
      params.append(np.asarray(b3['params'], np.float32))
  return np.stack(real), np.stack(fake), np.concatenate(params)


def _image_only_accuracy(cfg, real, fake, params, seed=0):
  """Train the critic on shuffled parameters; (real acc, fake acc) on held-out batches."""
  critic = SelfCritic(tuple(cfg.critic.encoder_widths), int(cfg.critic.latent_dim),
                      tuple(cfg.critic.hidden))
  cp = state_lib.init_critic(critic, seed, real.shape[2:4], params.shape[-1])
  cfg.optim.critic_lr = LR
  tx = optimizers.critic_optimizer(cfg.optim)
  opt = tx.init(cp)
  rng = np.random.default_rng(seed)

  def shuffled(k):
    # Every pair gets a parameter vector drawn from the whole pool, whatever its side.
    return jnp.asarray(params[rng.integers(0, len(params), k)])

  @functools.partial(jax.jit, compiler_options=RUN_HEAVY_COMPILER_OPTIONS)
  def step(cp, opt, xr, xf, pr, pf):
    def loss(cp):
      return losses.critic_loss(critic.apply(cp, xr, pr), critic.apply(cp, xf, pf))
    l, g = jax.value_and_grad(loss)(cp)
    u, opt = tx.update(g, opt, cp)
    return optax.apply_updates(cp, u), opt, l

  for s in range(STEPS):
    i = s % TRAIN_BATCHES
    cp, opt, _ = step(cp, opt, real[i], fake[i], shuffled(BATCH), shuffled(BATCH))
  score = jax.jit(critic.apply, compiler_options=RUN_HEAVY_COMPILER_OPTIONS)
  acc_r = np.mean([np.mean(score(cp, real[i], shuffled(BATCH)) > 0)
                   for i in range(TRAIN_BATCHES, TRAIN_BATCHES + TEST_BATCHES)])
  acc_f = np.mean([np.mean(score(cp, fake[i], shuffled(BATCH)) < 0)
                   for i in range(TRAIN_BATCHES, TRAIN_BATCHES + TEST_BATCHES)])
  return float(acc_r), float(acc_f)


def _measure(tmp_path, source_3d):
  """(real, fake) held-out accuracy of the image-only critic on ``source_3d``'s streams."""
  cfg = _data_cfg(tmp_path, source_3d)
  return _image_only_accuracy(cfg, *_pairs(cfg))


@requires_assets('pretrained', 'mb05_120x120.pth')
@requires_assets('pretrained', 'param_mean_std_62d_120x120.pkl')
@requires_assets('bfm', 'Model_PAF.pkl')
@requires_assets('aflw-wild', 'list.txt')
def test_image_only_critic_is_at_chance_on_the_study_streams(tmp_path):
  acc_r, acc_f = _measure(tmp_path, 'teacher')
  # 128 + 128 held-out pairs: chance has a standard deviation of ~0.03 on the balanced
  # accuracy; 0.5 +- 0.1 is beyond 3 of them.
  assert abs((acc_r + acc_f) / 2 - 0.5) < 0.1, (acc_r, acc_f)


@requires_assets('pretrained', 'param_mean_std_62d_120x120.pkl')
@requires_assets('bfm', 'Model_PAF.pkl')
@requires_assets('aflw-wild', 'list.txt')
def test_image_only_critic_separates_rendered_faces_from_photographs(tmp_path):
  acc_r, acc_f = _measure(tmp_path, 'synthetic_bfm')
  assert (acc_r + acc_f) / 2 > 0.8, (acc_r, acc_f)
