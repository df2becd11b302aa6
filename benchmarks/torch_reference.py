"""PyTorch references for speed comparisons (optional: only used when torch is installed).

The same networks as ``dasl_jax.models`` (MobileNetV1 at any width, 3DDFA_V2's
module layout; ResNet-50 with a 4-channel stem and a stride-1 last stage, as in
2DASL), a supervised step (SGD Nesterov 0.9, weight decay 5e-4, a WPDC-style
weighted MSE on the 62 outputs, as 3DDFA's training step) and eager inference.
Nothing in the project imports torch; ``benchmarks.run`` calls this only when
``import torch`` works.
"""
from __future__ import annotations

import time
from typing import Callable, Dict

import numpy as np

from dasl_jax.models.mobilenet import BLOCKS, STEM_CHANNELS


def _torch():
  import torch
  return torch


def mobilenet_v1(width: float = 0.5, in_channels: int = 4, num_outputs: int = 62):
  """3DDFA_V2's MobileNetV1 (conv 3x3/2, 13 depthwise-separable blocks, avg pool, fc)."""
  torch = _torch()
  tnn = torch.nn

  class DepthWiseBlock(tnn.Module):

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv_dw = tnn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
      self.bn_dw = tnn.BatchNorm2d(cin)
      self.conv_sep = tnn.Conv2d(cin, cout, 1, 1, 0, bias=False)
      self.bn_sep = tnn.BatchNorm2d(cout)
      self.relu = tnn.ReLU(inplace=True)

    def forward(self, x):
      x = self.relu(self.bn_dw(self.conv_dw(x)))
      return self.relu(self.bn_sep(self.conv_sep(x)))

  class MobileNet(tnn.Module):

    def __init__(self):
      super().__init__()
      c = int(STEM_CHANNELS * width)
      self.conv1 = tnn.Conv2d(in_channels, c, 3, 2, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(c)
      self.relu = tnn.ReLU(inplace=True)
      self.names = [name for name, _, _ in BLOCKS]
      for name, cout, stride in BLOCKS:
        setattr(self, name, DepthWiseBlock(c, int(cout * width), stride))
        c = int(cout * width)
      self.avgpool = tnn.AdaptiveAvgPool2d(1)
      self.fc_param = tnn.Linear(c, num_outputs)

    def forward(self, x):
      x = self.relu(self.bn1(self.conv1(x)))
      for name in self.names:
        x = getattr(self, name)(x)
      return self.fc_param(self.avgpool(x).flatten(1))

  return MobileNet()


def resnet50(in_channels: int = 4, num_outputs: int = 62, base_width: int = 64):
  """torchvision-style ResNet-50 (v1.5, stride on the 3x3), last stage stride 1 (2DASL)."""
  torch = _torch()
  tnn = torch.nn

  class Bottleneck(tnn.Module):

    def __init__(self, cin, width, stride):
      super().__init__()
      out = width * 4
      self.conv1 = tnn.Conv2d(cin, width, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(width)
      self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False)
      self.bn2 = tnn.BatchNorm2d(width)
      self.conv3 = tnn.Conv2d(width, out, 1, bias=False)
      self.bn3 = tnn.BatchNorm2d(out)
      self.relu = tnn.ReLU(inplace=True)
      self.down = None
      if cin != out or stride != 1:
        self.down = tnn.Sequential(tnn.Conv2d(cin, out, 1, stride, bias=False),
                                   tnn.BatchNorm2d(out))

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      return self.relu(y + (x if self.down is None else self.down(x)))

  class ResNet(tnn.Module):

    def __init__(self):
      super().__init__()
      self.stem = tnn.Sequential(
          tnn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False), tnn.BatchNorm2d(base_width),
          tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2, 1))
      blocks, cin = [], base_width
      for s, (n, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 1))):
        for b in range(n):
          blocks.append(Bottleneck(cin, base_width * 2 ** s, stride if b == 0 else 1))
          cin = base_width * 2 ** s * 4
      self.blocks = tnn.Sequential(*blocks)
      self.fc = tnn.Linear(cin, num_outputs)

    def forward(self, x):
      x = self.blocks(self.stem(x))
      return self.fc(x.mean((2, 3)))

  return ResNet()


def build(arch: str, width: float = 0.5, in_channels: int = 4):
  if arch == 'mobilenet':
    return mobilenet_v1(width, in_channels)
  if arch == 'resnet50':
    return resnet50(in_channels)
  raise ValueError(f'unknown arch {arch!r}')


def make_train_step(net, lr: float = 0.004) -> Callable:
  """A supervised step: weighted MSE on 62 outputs (WPDC-style fixed weights), SGD Nesterov.

  Returns step(x (B, C, H, W) float tensor, target (B, 62), weights (B, 62)) -> loss float.
  """
  torch = _torch()
  opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True,
                        weight_decay=5e-4)
  net.train()

  def step(x, target, weights):
    out = net(x)
    loss = (weights * (out - target) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())

  return step


def train_inputs(batch: int, in_channels: int = 4, seed: int = 0):
  """(x, target, weights) torch tensors of a random batch (NCHW, 120x120)."""
  torch = _torch()
  rng = np.random.default_rng(seed)
  x = torch.from_numpy(rng.normal(size=(batch, in_channels, 120, 120)).astype(np.float32))
  t = torch.from_numpy(rng.normal(size=(batch, 62)).astype(np.float32))
  w = torch.from_numpy(rng.uniform(size=(batch, 62)).astype(np.float32))
  return x, t, w


def make_predict(net) -> Callable:
  """Eager inference: uint8 NHWC BGR (B, 120, 120, C) -> (B, 62) numpy."""
  torch = _torch()
  net.eval()

  def predict(image):
    with torch.no_grad():
      x = (torch.from_numpy(image).permute(0, 3, 1, 2).float() - 127.5) / 128.0
      return net(x).numpy()

  return predict


def set_threads(n: int = 2) -> None:
  _torch().set_num_threads(n)


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Dict[str, float]:
  for _ in range(warmup):
    fn()
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return {'median_s': float(np.median(ts)), 'min_s': float(np.min(ts)), 'repeats': repeats}
