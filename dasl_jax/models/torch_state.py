"""PyTorch state dicts of the peers' networks: the checks every converter shares.

MobileNetV1 (``mobilenet.variables_from_torch``), ResNet and ResNet-22
(``resnet.variables_from_torch``, ``resnet22_variables_from_torch``) each know their
tensor names and shapes; these functions clean a state dict, refuse one that is
not the network asked for (one line naming the first tensor that differs), and
widen a 3-channel first convolution to 4 channels.
"""
from __future__ import annotations

import numpy as np

from dasl_jax.errors import DaslError


def clean(state_dict, drop=()):
  """Numpy arrays, without ``num_batches_tracked`` and the tensors whose names start
  with one of ``drop`` (heads the forward pass does not use)."""
  return {k: np.asarray(v) for k, v in state_dict.items()
          if not k.endswith('num_batches_tracked') and not k.startswith(tuple(drop))}


def check(sd, want, what, source):
  """Raise DaslError (one line, naming the tensor) unless ``sd`` has exactly ``want``'s
  names and shapes.

  Args:
    sd: cleaned state dict (name -> array).
    want: name -> shape the network needs.
    what: the network, as the message names it (``'ResNet-50 (4 input channels)'``).
    source: the file.
  """
  missing = [k for k in want if k not in sd]
  extra = [k for k in sd if k not in want]
  if missing:
    raise DaslError(f'{source}: missing {missing[0]} (and {len(missing) - 1} more): not a '
                    f'{what} state dict')
  if extra:
    raise DaslError(f'{source}: unexpected tensor {extra[0]} (and {len(extra) - 1} more): '
                    f'not a {what} state dict')
  for k, shp in want.items():
    if tuple(sd[k].shape) != tuple(shp):
      raise DaslError(f'{source}: {k} has shape {tuple(sd[k].shape)}, {what} needs {shp}')


def stored_in_channels(sd, in_channels, source, key='conv1.weight'):
  """Input channels of the stored first convolution (OIHW); DaslError unless 3 or 4 and
  at most ``in_channels`` (a 3-channel network is widened, never narrowed)."""
  w = sd.get(key)
  stored = w.shape[1] if w is not None and w.ndim == 4 else in_channels
  if stored not in (3, 4) or stored > in_channels:
    raise DaslError(f'{source}: {key} has {stored} input channels; cannot build '
                    f'a {in_channels}-channel model from it')
  return stored


def widen_first_conv(kernel, in_channels):
  """A HWIO kernel with zero weights on the input channels it lacks (the FLM channel):
  the widened network computes the same function until trained."""
  extra = in_channels - kernel.shape[2]
  if extra <= 0:
    return kernel
  return np.concatenate([kernel, np.zeros(kernel.shape[:2] + (extra,) + kernel.shape[3:],
                                          kernel.dtype)], axis=2)
