"""Networks: the regressor (MobileNetV1 or ResNet) and the self-critic.

:class:`ModelConfig` is what a checkpoint stores about its regressor;
:func:`create_regressor` turns it into a Flax module (plain if/else, so grep
finds every architecture).
"""
from __future__ import annotations

import dataclasses
import json

from dasl_jax.errors import DaslError

ARCHES = ('mobilenet', 'resnet', 'resnet22')
RESNET_POOLS = ('mean', 'avg7s2')
COMPUTE_DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything needed to rebuild a regressor and read its output.

  arch: 'mobilenet', 'resnet' (18/34/50, 2DASL's) or 'resnet22' (3DDFA_V2's).
  width: MobileNetV1 widen factor (0.5 for 3DDFA_V2's mb05).
  depth: ResNet depth (18, 34 or 50; 50 is 2DASL's).
  in_channels: 3 (colour) or 4 (colour + FLM).
  num_params: outputs (62).
  convention: pixel convention of its training labels, 'v1' or 'v2'.
  depthwise: how MobileNet's depthwise conv runs: 'auto' (shifted on CPU,
    grouped elsewhere), 'shifted' or 'grouped'. Same parameters either way.
  resnet_width: ResNet stem / first-stage channels (64 = the paper's; small
    values give tiny test networks).
  resnet_pool: 'mean' (global average) or 'avg7s2' (2DASL's AvgPool2d(7,
    stride=2): the top-left 7x7 window of the 8x8 map; converted 2DASL models).
  compute_dtype: activation dtype, 'float32' or 'bfloat16' (mixed precision for
    accelerators: parameters, batch-norm statistics and the output stay float32,
    so the same variables run in either). Written to model_config.json only
    when not float32, so files without it (all older ones) read as float32.
  """
  arch: str = 'mobilenet'
  width: float = 0.5
  depth: int = 50
  in_channels: int = 4
  num_params: int = 62
  convention: str = 'v1'
  depthwise: str = 'auto'
  resnet_width: int = 64
  resnet_pool: str = 'mean'
  compute_dtype: str = 'float32'

  # The fields each architecture reads (the others keep their defaults, unused).
  ARCH_FIELDS = {'mobilenet': ('width', 'depthwise'),
                 'resnet': ('depth', 'resnet_width', 'resnet_pool'), 'resnet22': ()}

  def __post_init__(self):
    # Fields only another architecture reads keep their defaults, so two configs
    # of one network compare equal whatever a flagfile set for the other one.
    own = set(self.ARCH_FIELDS.get(self.arch, ()))
    for f in dataclasses.fields(self):
      if f.name in _ARCH_SPECIFIC and f.name not in own:
        object.__setattr__(self, f.name, f.default)

  def relevant(self) -> dict:
    """The fields that mean something for this architecture (what is written and shown)."""
    own = set(self.ARCH_FIELDS.get(self.arch, ()))
    return {k: v for k, v in dataclasses.asdict(self).items()
            if (k not in _ARCH_SPECIFIC or k in own)
            and not (k == 'compute_dtype' and v == 'float32')}

  def __repr__(self):
    return 'ModelConfig(' + ', '.join(f'{k}={v!r}' for k, v in self.relevant().items()) + ')'

  def to_json(self) -> str:
    return json.dumps(self.relevant(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d, source='model config'):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise DaslError(f'{source}: unknown model config keys {unknown}')
    cfg = cls(**d)
    if cfg.arch not in ARCHES:
      raise DaslError(f'{source}: arch must be one of {ARCHES}, got {cfg.arch!r}')
    if cfg.in_channels not in (3, 4):
      raise DaslError(f'{source}: in_channels must be 3 or 4, got {cfg.in_channels}')
    if cfg.convention not in ('v1', 'v2'):
      raise DaslError(f'{source}: convention must be v1 or v2, got {cfg.convention!r}')
    if cfg.compute_dtype not in COMPUTE_DTYPES:
      raise DaslError(f'{source}: compute_dtype must be one of {COMPUTE_DTYPES}, '
                      f'got {cfg.compute_dtype!r}')
    if cfg.resnet_pool not in RESNET_POOLS:
      raise DaslError(f'{source}: resnet_pool must be one of {RESNET_POOLS}, '
                      f'got {cfg.resnet_pool!r}')
    return cfg


_ARCH_SPECIFIC = {f for fs in ModelConfig.ARCH_FIELDS.values() for f in fs}


def create_regressor(cfg: ModelConfig):
  """ModelConfig -> Flax module mapping (B, 120, 120, C) -> (B, num_params) float32."""
  # Here, not at the top: reading and checking a ModelConfig (flag parsing, model
  # files) must not import JAX and Flax, which take seconds.
  import jax.numpy as jnp
  dtype = jnp.dtype(cfg.compute_dtype)
  if cfg.arch == 'mobilenet':
    from dasl_jax.models.mobilenet import MobileNetV1
    return MobileNetV1(width=cfg.width, num_outputs=cfg.num_params,
                       depthwise=cfg.depthwise, dtype=dtype)
  if cfg.arch == 'resnet':
    from dasl_jax.models.resnet import ResNet
    return ResNet(depth=cfg.depth, num_outputs=cfg.num_params, base_width=cfg.resnet_width,
                  pool=cfg.resnet_pool, dtype=dtype)
  if cfg.arch == 'resnet22':
    from dasl_jax.models.resnet import ResNet22
    return ResNet22(num_outputs=cfg.num_params, dtype=dtype)
  raise DaslError(f'unknown arch {cfg.arch!r}; use one of {ARCHES}')
