"""The released PyTorch checkpoints of the peer projects, and how to convert each.

One table (:data:`KINDS`) holds, per kind, what the peer code says about its
checkpoint: the network, where the state dict sits in the file, the input
channels, which whitening statistics the outputs are in and the pixel
convention of the training labels (``camera.CONVENTIONS``). All kinds take
BGR crops normalised as ``(x - 127.5) / 128`` (``inputs.normalize_image``).

=========  ===================================  ===========================  ====
kind       file (peer repository)               whitening file               conv
=========  ===================================  ===========================  ====
mb05       mb05_120x120.pth (3DDFA_V2)          param_mean_std_62d_120x120   v2
mb1        mb1_120x120.pth (3DDFA_V2)           param_mean_std_62d_120x120   v2
resnet22   resnet22.pth (3DDFA_V2)              param_mean_std_62d_120x120   v2
3ddfa_v1   phase1_wpdc_vdc.pth.tar (3DDFA)      param_whitening.pkl          v1
2dasl      2DASL_checkpoint_epoch_allParams_    param_whitening.pkl          v1
           stage{1,2}.pth.tar (2DASL)
=========  ===================================  ===========================  ====

Only mb05 has been checked against a real file (tests/io/test_convert.py); the
others are tested on state dicts written with the names and shapes their
peer code implies (tests/io/test_peer_converters.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from dasl_jax.io import torch_pickle
from dasl_jax.errors import DaslError
from dasl_jax.models import ModelConfig
from dasl_jax.models import mobilenet, resnet

V2_STATS = 'param_mean_std_62d_120x120.pkl'
V1_STATS = 'param_whitening.pkl'


@dataclasses.dataclass(frozen=True)
class Kind:
  name: str
  description: str
  stats_file: str
  # Folders (relative to the checkpoint's) searched for stats_file, in order:
  # beside it, then where the peer repository keeps it.
  stats_dirs: Tuple[str, ...]
  convention: str
  in_channels: int  # of the released network (and the converted model's default)
  wrapper: str  # the key of the state dict in the saved object


KINDS = {
    'mb05': Kind('mb05', '3DDFA_V2 MobileNetV1 x0.5 (mb05_120x120.pth)', V2_STATS,
                 ('.', '../configs'), 'v2', 3, 'state_dict'),
    'mb1': Kind('mb1', '3DDFA_V2 MobileNetV1 x1.0 (mb1_120x120.pth)', V2_STATS,
                ('.', '../configs'), 'v2', 3, 'state_dict'),
    'resnet22': Kind('resnet22', '3DDFA_V2 ResNet-22 (resnet22.pth)', V2_STATS,
                     ('.', '../configs'), 'v2', 3, 'state_dict'),
    '3ddfa_v1': Kind('3ddfa_v1', '3DDFA (v1) MobileNetV1 x1.0 (phase1_wpdc_vdc.pth.tar)',
                     V1_STATS, ('.', '../train.configs'), 'v1', 3, 'state_dict'),
    '2dasl': Kind('2dasl', '2DASL ResNet-50, 4 input channels '
                  '(2DASL_checkpoint_epoch_allParams_stage*.pth.tar)', V1_STATS,
                  ('.', '../test_codes/train.configs', '../train.configs'), 'v1', 4,
                  'res_state_dict'),
}
MOBILENET_WIDTH = {'mb05': 0.5, 'mb1': 1.0, '3ddfa_v1': 1.0}


def read_state_dict(path, kind: Optional[str] = None):
  """The tensors of a peer checkpoint as ``{name: array}``, ``module.`` stripped.

  Takes ``obj[KINDS[kind].wrapper]`` when the file holds it (2DASL keeps its
  regressor under ``res_state_dict``), else the usual unwrapping of
  :func:`torch_pickle.load_state_dict`.
  """
  obj = torch_pickle.load(path)
  if kind is not None and isinstance(obj, dict) and isinstance(obj.get(KINDS[kind].wrapper),
                                                                 dict):
    obj = obj[KINDS[kind].wrapper]
  return torch_pickle.state_dict_of(obj, path)


def guess_kind(sd) -> Tuple[Optional[str], Optional[str]]:
  """(kind or None, description or None) of the network a state dict looks like."""
  conv1 = sd.get('conv1.weight')
  cin = conv1.shape[1] if conv1 is not None and conv1.ndim == 4 else None
  if 'dw2_1.conv_dw.weight' in sd and conv1 is not None:
    width = conv1.shape[0] / mobilenet.STEM_CHANNELS
    if 'fc_param.weight' in sd:
      kind = {0.5: 'mb05', 1.0: 'mb1'}.get(width)
      return kind, f'3DDFA_V2 MobileNetV1 x{width:g}'
    if 'fc.weight' in sd:
      return ('3ddfa_v1' if width == 1.0 else None), f'3DDFA (v1) MobileNetV1 x{width:g}'
    return None, f'a MobileNetV1 x{width:g}'
  if 'conv_param.weight' in sd and 'layer3.0.conv1.weight' in sd:
    return 'resnet22', '3DDFA_V2 ResNet-22'
  if 'layer4.0.conv3.weight' in sd:
    fc = sd.get('fc.weight')
    out = fc.shape[0] if fc is not None and fc.ndim == 2 else '?'
    kind = '2dasl' if cin == 4 and out == 62 else None
    return kind, f'a ResNet with bottlenecks ({cin} input channels, {out} outputs)'
  if 'layer4.0.conv2.weight' in sd:
    return None, f'a ResNet-18/34 ({cin} input channels)'
  if any(k.startswith('inception1.') for k in sd):
    return None, 'the FaceBoxes face detector'
  return None, None


def _check_kind(sd, kind, source):
  """Raise when ``sd`` is recognisably another kind; returns the guess's description."""
  guess, desc = guess_kind(sd)
  if guess is not None and guess != kind:
    raise DaslError(f'{source}: not a {KINDS[kind].description} checkpoint; it looks like '
                    f'{desc} (--kind {guess})')
  return desc


def convert_state_dict(sd, kind: str, in_channels: Optional[int] = None,
                       depthwise: str = 'auto', source: str = 'state dict',
                       width: Optional[float] = None):
  """Peer state dict -> (ModelConfig, Flax variables).

  in_channels: of the converted model (default: the released network's); 4 on a
    3-channel network adds a zero-weighted FLM channel (same outputs until trained).
  width: MobileNet widen factor override (``--widen_factor`` of the old flag).
  """
  if kind not in KINDS:
    raise DaslError(f'--kind must be one of {sorted(KINDS)}, got {kind!r}')
  k = KINDS[kind]
  cin = k.in_channels if in_channels is None else in_channels
  if cin not in (3, 4):
    raise DaslError(f'--in_channels must be 3 or 4, got {cin}')
  desc = _check_kind(sd, kind, source) if width is None else None
  try:
    return _convert(sd, kind, k, cin, depthwise, source, width)
  except DaslError as e:  # a key or shape error: say what the file looks like
    if desc is None:
      raise
    raise DaslError(f'{e} (it looks like {desc})') from None


def _convert(sd, kind, k, cin, depthwise, source, width):
  if kind in MOBILENET_WIDTH:
    w = MOBILENET_WIDTH[kind] if width is None else width
    sd = dict(sd)
    if kind == '3ddfa_v1':  # 3DDFA v1 names its head fc; 3DDFA_V2 fc_param
      for leaf in ('weight', 'bias'):
        if f'fc.{leaf}' in sd:
          sd[f'fc_param.{leaf}'] = sd.pop(f'fc.{leaf}')
    variables = mobilenet.variables_from_torch(sd, w, cin, source=source)
    cfg = ModelConfig(arch='mobilenet', width=w, in_channels=cin, num_params=62,
                      convention=k.convention, depthwise=depthwise)
  elif kind == 'resnet22':
    variables = resnet.resnet22_variables_from_torch(sd, cin, source=source)
    cfg = ModelConfig(arch='resnet22', in_channels=cin, num_params=62,
                      convention=k.convention, depthwise=depthwise)
  else:  # 2dasl
    if cin != 4:
      raise DaslError(f'{source}: 2DASL\'s ResNet-50 takes 4 input channels; '
                      f'--in_channels {cin} is not possible')
    variables = resnet.variables_from_torch(sd, 50, 4, 62, 64, source=source)
    cfg = ModelConfig(arch='resnet', depth=50, in_channels=4, num_params=62,
                      convention=k.convention, depthwise=depthwise, resnet_width=64,
                      resnet_pool='avg7s2')
  return cfg, variables


def default_param_stats(pth, kind: str) -> Path:
  """The whitening file of ``kind`` beside ``pth`` or where the peer repository keeps it."""
  k = KINDS[kind]
  base = Path(pth).parent
  tried = [base / d / k.stats_file for d in k.stats_dirs]
  for p in tried:
    if p.exists():
      return p.resolve()
  raise DaslError(f'--param_stats is required: no {k.stats_file} found for --kind {kind} '
                  f'({", ".join(str(p) for p in tried)})')
