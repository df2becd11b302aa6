"""Probe model: the project's ResNet-50 (dasl_jax.models.resnet) with 1x1 convolutions as
matrix products (layers.pointwise) and optionally 3x3 ones as patches x matrix.

Same module names and parameter shapes as dasl_jax.models.resnet.ResNet (depth 50).

  python -m benchmarks.probes.fast_resnet [--batch 32] [--rounds 4] [--torch_threads 1]
"""
import argparse

import flax.linen as nn
import jax.numpy as jnp

from dasl_jax.models import layers
from dasl_jax.models import resnet as rn


class Bottleneck(nn.Module):
  features: int
  strides: int = 1
  patches3x3: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     epsilon=rn.BN_EPS, name=name)
    init = nn.initializers.lecun_normal()
    out = self.features * 4
    y = layers.PointwiseConv(self.features, init, name='conv1')(x)
    y = nn.relu(norm('bn1')(y))
    if self.patches3x3:
      y = layers.Conv3x3(self.features, self.strides, init, name='conv2')(y)
    else:
      y = nn.Conv(self.features, (3, 3), (self.strides,) * 2, padding=1, use_bias=False,
                  name='conv2')(y)
    y = nn.relu(norm('bn2')(y))
    y = layers.PointwiseConv(out, init, name='conv3')(y)
    y = norm('bn3')(y)
    if x.shape[-1] != out or self.strides != 1:
      xs = x[:, ::self.strides, ::self.strides] if self.strides != 1 else x
      x = layers.PointwiseConv(out, init, name='downsample_conv')(xs)
      x = norm('downsample_bn')(x)
    return nn.relu(x + y)


class ResNet50Fast(nn.Module):
  num_outputs: int = 62
  base_width: int = 64
  patches3x3: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.base_width, (7, 7), (2, 2), padding=3, use_bias=False, name='conv1')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=rn.BN_EPS,
                     name='bn1')(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for s, (n, stride) in enumerate(zip(rn.STAGES[50], rn.STRIDES)):
      for b in range(n):
        x = Bottleneck(self.base_width * 2 ** s, stride if b == 0 else 1, self.patches3x3,
                       name=f'layer{s + 1}_{b}')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_outputs, name='fc')(x)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--batch', type=int, default=32)
  ap.add_argument('--rounds', type=int, default=4)
  ap.add_argument('--torch_threads', type=int, default=1)
  ap.add_argument('--variants', default='project,pw,pw+c3')
  a = ap.parse_args()
  from dasl_jax import cpu_runtime
  cpu_runtime.tune_malloc()
  from benchmarks.run import supervised_step, _interleave
  fns = {}
  for v in a.variants.split(','):
    m = rn.ResNet(depth=50) if v == 'project' else ResNet50Fast(patches3x3='c3' in v)
    fns[v], c = supervised_step(m, a.batch)
    print(f'{v}: compile {c:.1f} s', flush=True)
  if a.torch_threads:
    from benchmarks import torch_reference as tr
    tr.set_threads(a.torch_threads)
    step = tr.make_train_step(tr.resnet50(4))
    x, t, w = tr.train_inputs(a.batch)
    fns['torch'] = lambda: step(x, t, w)
  med = _interleave(fns, a.rounds)
  for k, m in med.items():
    r = f'  ({med["torch"]["median_s"] / m["median_s"]:.2f}x torch)' if 'torch' in med else ''
    print(f'{k}: {a.batch / m["median_s"]:.2f} img/s, cpu user {m["cpu_user_s"]:.2f} s{r}')


if __name__ == '__main__':
  main()
