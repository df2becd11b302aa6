r"""Convert a peer project's released PyTorch checkpoint into a dasl-jax model directory.

  python -m experiments.convert_checkpoint --from mb1_120x120.pth --kind mb1 --out /tmp/mb1
  python -m experiments.convert_checkpoint \
    --from_3ddfa_v2 ../shared/assets/pretrained/mb05_120x120.pth --out /tmp/mb05

Kinds (dasl_jax/io/peer_checkpoints.py has the facts behind each): mb05, mb1,
resnet22 (3DDFA_V2; whitening ``param_mean_std_62d_120x120.pkl``, convention
v2), 3ddfa_v1 (3DDFA's phase1_wpdc_vdc.pth.tar; ``param_whitening.pkl``, v1),
2dasl (2DASL's ResNet-50, 4 channels; ``param_whitening.pkl``, v1). ``auto``
picks the kind from the tensor names and shapes. The whitening file defaults to
the kind's file beside the checkpoint or where the peer repository keeps it.

``--from_3ddfa_v2 PTH`` (the older flag) is ``--from PTH`` with a 3DDFA_V2
MobileNet of ``--widen_factor`` (default 0.5). No torch needed. ``--in_channels
4`` on a 3-channel network adds a zero-weighted FLM input channel (same outputs
until fine-tuned).
"""
from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags


from dasl_jax import cli
from dasl_jax.io import checkpoint
from dasl_jax.geometry import params
from dasl_jax.io import peer_checkpoints
from dasl_jax.errors import DaslError

KIND_NAMES = sorted(peer_checkpoints.KINDS)

flags.DEFINE_string('from', None, 'Peer PyTorch checkpoint (.pth / .pth.tar, legacy or zip).')
flags.DEFINE_enum('kind', 'auto', ['auto'] + KIND_NAMES,
                  'Which peer network the file holds (auto: guess from its tensors).')
flags.DEFINE_string('from_3ddfa_v2', None, '3DDFA_V2 MobileNetV1 .pth (legacy flag: '
                    '--from with a MobileNet of --widen_factor).')
flags.DEFINE_string('out', None, 'Output model directory (created).')
flags.DEFINE_string('param_stats', None, 'Whitening statistics of the checkpoint '
                    '(default: the kind\'s file, see the module docstring).')
flags.DEFINE_float('widen_factor', 0.5, 'MobileNetV1 widen factor (only with --from_3ddfa_v2).')
flags.DEFINE_integer('in_channels', None, '3 or 4 (default: the network\'s own; 4 on a '
                     '3-channel network adds a zero-weighted FLM channel).')
flags.DEFINE_enum('depthwise', 'auto', ['auto', 'grouped', 'shifted'],
                  'Depthwise conv implementation stored in the model config.')
FLAGS = flags.FLAGS


def convert(pth, out, param_stats=None, widen_factor=0.5, in_channels=None, depthwise='auto',
            kind=None):
  """Convert and save; returns the output directory.

  kind None: a 3DDFA_V2 MobileNet of ``widen_factor`` (the --from_3ddfa_v2 path);
  'auto': guessed from the file; else one of peer_checkpoints.KINDS.
  """
  flag = '--from_3ddfa_v2' if kind is None else '--from'
  if pth is None:
    raise DaslError(f'{flag} is required (path of the .pth file)')
  if out is None:
    raise DaslError('--out is required (the model directory to write)')
  if in_channels is not None and in_channels not in (3, 4):
    raise DaslError(f'--in_channels must be 3 or 4, got {in_channels}')
  pth = Path(pth)
  out = Path(out)
  if (out / checkpoint.CHECKPOINTS).exists() and any((out / checkpoint.CHECKPOINTS).iterdir()):
    raise DaslError(f'{out}: already holds checkpoints; choose another --out')
  width = None
  if kind is None:
    kind, width = {0.5: 'mb05', 1.0: 'mb1'}.get(widen_factor, 'mb05'), widen_factor
  sd = peer_checkpoints.read_state_dict(pth, None if kind == 'auto' else kind)
  if kind == 'auto':
    kind, desc = peer_checkpoints.guess_kind(sd)
    if kind is None:
      raise DaslError(f'{pth}: cannot tell which --kind this is'
                      + (f' (it looks like {desc}, which no converter reads)' if desc else '')
                      + f'; kinds: {", ".join(KIND_NAMES)}')
    if peer_checkpoints.KINDS[kind].wrapper != 'state_dict':
      sd = peer_checkpoints.read_state_dict(pth, kind)
  # Convert first: a file of another kind is reported before a missing whitening file.
  cfg, variables = peer_checkpoints.convert_state_dict(
      sd, kind, in_channels, depthwise, source=str(pth), width=width)
  if param_stats is None:
    param_stats = peer_checkpoints.default_param_stats(pth, kind)
  stats = params.load_param_stats(Path(param_stats).resolve())
  return checkpoint.save_model(out, cfg, variables, stats, step=0)


def _main(argv):
  del argv
  src = FLAGS['from'].value
  if src is not None and FLAGS.from_3ddfa_v2 is not None:
    raise DaslError('give one of --from and --from_3ddfa_v2')
  if src is None and FLAGS.from_3ddfa_v2 is None:
    raise DaslError('--from is required (path of the peer .pth file; see --kind)')
  if src is None:
    out = convert(FLAGS.from_3ddfa_v2, FLAGS.out, FLAGS.param_stats, FLAGS.widen_factor,
                  FLAGS.in_channels, FLAGS.depthwise)
  else:
    out = convert(src, FLAGS.out, FLAGS.param_stats, in_channels=FLAGS.in_channels,
                  depthwise=FLAGS.depthwise, kind=FLAGS.kind)
  cfg = json.loads((Path(out) / checkpoint.MODEL_CONFIG).read_text())
  arch = (f'MobileNetV1 x{cfg["width"]}' if cfg['arch'] == 'mobilenet' else
          'ResNet-22' if cfg['arch'] == 'resnet22' else f'ResNet-{cfg["depth"]}')
  print(f'wrote {out} ({arch}, {cfg["in_channels"]} input channels, '
        f'convention {cfg["convention"]})')


main = cli.command(_main)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
