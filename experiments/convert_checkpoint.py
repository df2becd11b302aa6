r"""Convert 3DDFA_V2's PyTorch MobileNetV1 checkpoint into a dasl-jax model directory.

  python -m experiments.convert_checkpoint \
    --from_3ddfa_v2 ../shared/assets/pretrained/mb05_120x120.pth --out /tmp/mb05

No torch needed. The output (docs/ARCHITECTURE.md layout) stores pixel
convention 'v2' and the whitening statistics the checkpoint was trained with
(default: ``param_mean_std_62d_120x120.pkl`` beside the .pth). ``--in_channels 4``
adds a zero-weighted FLM input channel (same outputs until fine-tuned).
"""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging

from dasl_jax import checkpoint, params, torch_pickle
from dasl_jax.errors import DaslError
from dasl_jax.models import ModelConfig
from dasl_jax.models.mobilenet import variables_from_torch

V2_STATS = 'param_mean_std_62d_120x120.pkl'

flags.DEFINE_string('from_3ddfa_v2', None, '3DDFA_V2 MobileNetV1 .pth (legacy or zip format).')
flags.DEFINE_string('out', None, 'Output model directory (created).')
flags.DEFINE_string('param_stats', None, 'Whitening statistics of the checkpoint '
                    f'(default: {V2_STATS} beside the .pth).')
flags.DEFINE_float('widen_factor', 0.5, 'MobileNetV1 widen factor of the checkpoint.')
flags.DEFINE_integer('in_channels', 3, '3, or 4 to add a zero-weighted FLM channel.')
flags.DEFINE_enum('depthwise', 'auto', ['auto', 'grouped', 'shifted'],
                  'Depthwise conv implementation stored in the model config.')
FLAGS = flags.FLAGS


def convert(pth, out, param_stats=None, widen_factor=0.5, in_channels=3, depthwise='auto'):
  """Convert and save; returns the output directory."""
  if pth is None:
    raise DaslError('--from_3ddfa_v2 is required (path of the .pth file)')
  if out is None:
    raise DaslError('--out is required (the model directory to write)')
  if in_channels not in (3, 4):
    raise DaslError(f'--in_channels must be 3 or 4, got {in_channels}')
  pth = Path(pth)
  if param_stats is None:
    guess = pth.parent / V2_STATS
    if not guess.exists():
      raise DaslError(f'--param_stats is required: no {V2_STATS} beside {pth}')
    param_stats = guess
  stats = params.load_param_stats(Path(param_stats).resolve())
  sd = torch_pickle.load_state_dict(pth)
  variables = variables_from_torch(sd, widen_factor, in_channels, source=str(pth))
  out = Path(out)
  if (out / checkpoint.CHECKPOINTS).exists() and any((out / checkpoint.CHECKPOINTS).iterdir()):
    raise DaslError(f'{out}: already holds checkpoints; choose another --out')
  cfg = ModelConfig(arch='mobilenet', width=widen_factor, in_channels=in_channels,
                    num_params=62, convention='v2', depthwise=depthwise)
  return checkpoint.save_model(out, cfg, variables, stats, step=0)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file at INFO
  try:
    out = convert(FLAGS.from_3ddfa_v2, FLAGS.out, FLAGS.param_stats, FLAGS.widen_factor,
                  FLAGS.in_channels, FLAGS.depthwise)
  except DaslError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'wrote {out} (MobileNetV1 x{FLAGS.widen_factor}, {FLAGS.in_channels} input '
        'channels, convention v2)')


if __name__ == '__main__':
  app.run(main)
