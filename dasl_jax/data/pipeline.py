"""The Grain input pipeline: two streams (3D-annotated and in-the-wild) side by side.

Per stream (Grain 0.2.18 dataset API):
``MapDataset.source(src).shuffle(seed).repeat()`` then a per-example
augmentation seeded from ``(seed, position)``, read by ``num_threads`` threads
with a read-ahead buffer, batched (drop remainder), optionally spread over
``num_workers`` processes (``mp_prefetch``). With several JAX processes
(``jax.distributed``) the batch size is global: the whole source is shuffled
alike everywhere and process ``k`` of ``n`` reads rows ``k*B/n .. (k+1)*B/n``
of each global batch, so the global batches are those of one process (same
order, same augmentation). The position of a stream is Grain's
iterator state, a small JSON-able dict: ``TrainStreams.get_state()`` /
``set_state()`` let a resumed run see the same batches bit for bit.

``build_data(config.data, seed)`` wires sources, model, statistics and streams
into a :class:`DataBundle`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

import cv2
import grain
import jax
import numpy as np

from dasl_jax.face_model import morphable_model as MM
from dasl_jax.geometry import params as P
from dasl_jax.assets import asset
from dasl_jax.data import augment as AUG
from dasl_jax.data import readers as R
from dasl_jax.data import teacher as TEACHER
from dasl_jax.data import wild_scheme as WILD_SCHEME
from dasl_jax.errors import DaslError

KEYS_3D = ('image', 'points18', 'mask18', 'params', 'lms68')
KEYS_WILD = ('image', 'points18', 'mask18')


def stream_seed(seed, k):
  """A 32-bit seed for stream ``k`` of run ``seed`` (independent streams)."""
  return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0])


class ExampleMap:
  """Per-example work of a stream: keep ``keys``, cast, augment.

  A picklable callable ``(position, example) -> example`` (worker processes
  need to pickle it). The augmentation generator is seeded from the seed and
  the example's position in the (global) stream, so an augmentation depends
  only on where the example is in the stream, never on threads, workers or
  the number of processes.
  """

  def __init__(self, keys, seed, augment_cfg=None, warper=None, stats=None, opencv_threads=-1):
    self.keys = tuple(keys)
    self.seed = int(seed)
    self.cfg = augment_cfg
    self.warper = warper
    self.stats = stats
    self.opencv_threads = int(opencv_threads)
    self._threads_set_in = None  # the process id where cv2.setNumThreads was called

  def _set_opencv_threads(self):
    # ``data.opencv_threads`` (-1, the default, leaves OpenCV's pool alone). On the
    # 2-core machine OpenCV's pool beside 4 Grain threads was the faster choice (aflw-wild
    # stream 729 vs 621 crops/s with one thread, benchmarks/README.md "OpenCV threads");
    # a host with many cores and many Grain threads or workers may want 1 to avoid
    # threads x pool oversubscription. The setting is per process, so it is made in
    # whichever process runs the map (the trainer, or each worker).
    pid = os.getpid()
    if self._threads_set_in != pid:
      self._threads_set_in = pid
      if self.opencv_threads >= 0:
        cv2.setNumThreads(self.opencv_threads)

  def __call__(self, position, example):
    self._set_opencv_threads()
    missing = [k for k in self.keys if k not in example]
    if missing:
      raise DaslError(f'data source gives {sorted(example)}; this stream needs {missing}')
    ex = {k: example[k] for k in self.keys}
    if self.cfg is not None:
      rng = np.random.default_rng([self.seed, int(position)])
      ex = AUG.augment(ex, rng, self.cfg, self.warper, self.stats)
    out = {'image': np.ascontiguousarray(ex['image'], np.uint8)}
    for k in self.keys[1:]:
      out[k] = np.asarray(ex[k], np.float32)
    return out


class Stream:
  """An endless, shuffled, augmented, batched stream of one source.

  Args:
    source: random-access source (``__len__``, ``__getitem__`` -> example dict).
    batch_size: examples per global batch (all processes together); each of ``count``
      processes yields ``batch_size / count`` of them.
    seed: shuffling and augmentation seed.
    example_map: an :class:`ExampleMap` (keys, augmentation).
    shuffle: shuffle (reshuffled every epoch) or read in order.
    num_threads, prefetch: Grain read threads and read-ahead buffer (examples).
    num_workers, worker_buffer: worker processes and batches each buffers.
    shard: (index, count); default this JAX process of all of them.
  """

  def __init__(self, source, batch_size, seed, example_map, shuffle=True, num_threads=4,
               prefetch=64, num_workers=0, worker_buffer=2, shard=None):
    index, count = shard if shard is not None else (jax.process_index(), jax.process_count())
    if batch_size % count:
      raise DaslError(f'batch size {batch_size} is not a multiple of the {count} processes; '
                      'change --config.data.batch_size_3d / batch_size_wild')
    ds = grain.MapDataset.source(source)
    self.examples_per_epoch = len(ds) // count
    if len(ds) < batch_size:
      raise DaslError(f'a data source of {len(ds)} rows is smaller than '
                      f'one batch of {batch_size}')
    if shuffle:
      ds = ds.shuffle(seed=seed)
    ds = ds.repeat(None).map_with_index(copy.copy(example_map))
    read = grain.ReadOptions(num_threads=max(1, num_threads),
                             prefetch_buffer_size=max(1, prefetch))
    if count > 1:
      # This process's contiguous rows of each global batch (lazy: only those are read).
      local = batch_size // count
      it = ds.batch(local, drop_remainder=True)[index::count].to_iter_dataset(read)
      batch_size = local
    else:
      it = ds.to_iter_dataset(read).batch(batch_size, drop_remainder=True)
    if num_workers > 0:
      # Grain's worker processes read absl flags; outside an absl app (tests,
      # notebooks) nobody parsed them, so take the defaults.
      from absl import flags
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=num_workers, per_worker_buffer_size=max(1, worker_buffer)))
    self.batch_size = batch_size
    self._copy = num_workers > 0
    self._dataset = it
    self._it = iter(it)

  def next(self):
    batch = next(self._it)
    if self._copy:  # worker batches live in shared memory that Grain recycles
      batch = {k: np.array(v) for k, v in batch.items()}
    return batch

  __next__ = next

  def __iter__(self):
    return self

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)

  def close(self):
    """Stop read threads and worker processes."""
    close = getattr(self._it, 'close', None)
    if close is not None:
      close()


class TrainStreams:
  """The two training streams side by side: ``next() -> (batch_3d, batch_wild)``.

  ``batch_wild`` is None when there is no wild source. ``get_state()`` returns
  a JSON-able dict; ``get_state_bytes()`` the same as UTF-8 JSON.
  """

  def __init__(self, stream_3d: Stream, stream_wild: Optional[Stream]):
    self.stream_3d = stream_3d
    self.stream_wild = stream_wild

  def next(self):
    b3 = self.stream_3d.next()
    bw = self.stream_wild.next() if self.stream_wild is not None else None
    return b3, bw

  __next__ = next

  def __iter__(self):
    return self

  def get_state(self):
    s = {'3d': self.stream_3d.get_state()}
    if self.stream_wild is not None:
      s['wild'] = self.stream_wild.get_state()
    return _jsonable(s)

  def set_state(self, state):
    if isinstance(state, (bytes, str)):
      state = json.loads(state)
    if '3d' not in state or (self.stream_wild is not None) != ('wild' in state):
      raise DaslError(f'data iterator state has streams {sorted(state)}; this run has '
                      f"{['3d'] + (['wild'] if self.stream_wild is not None else [])}")
    self.stream_3d.set_state(state['3d'])
    if self.stream_wild is not None:
      self.stream_wild.set_state(state['wild'])

  def close(self):
    self.stream_3d.close()
    if self.stream_wild is not None:
      self.stream_wild.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def get_state_bytes(self):
    return json.dumps(self.get_state(), sort_keys=True).encode()


def _jsonable(x):
  """Grain states hold ints, strings, bytes and numpy scalars: make them JSON-able."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, bytes):
    return x.decode('latin1')
  return x


# ----------------------------------------------------------------------------
# build_data


@dataclasses.dataclass
class DataBundle:
  """Everything the training side needs from the data side.

  model: 68-landmark MorphableModel (labels, losses); dense_model: full model
  for WPDC vertex sampling or None; param_stats: whitening of ``params``;
  convention: crop pixel convention of the labels; streams: TrainStreams;
  heldout: dict of stacked arrays in batch format (with ``lms68``) or None.
  """
  model: Any
  dense_model: Any
  param_stats: P.ParamStats
  convention: str
  streams: TrainStreams
  heldout: Optional[dict]
  sources: dict = dataclasses.field(default_factory=dict)
  # The validation crops (``config.data.validation``): ``image`` (N, 120, 120, 3),
  # ``pts21`` (N, 21, 2) crop pixels, ``vis21`` (N, 21), ``yaws`` (N,), and with a
  # teacher source its landmarks ``teacher_lms68`` (N, 68, 2); or None.
  validation: Optional[dict] = None
  # The wild labels' scheme (``data/wild_scheme.py``): 21 points (validation) and the 18 of
  # the 2D terms; None when the labels are read as iBUG's points.
  wild_scheme: Any = None
  wild_scheme18: Any = None

  @property
  def train_3d(self):
    """The 3D-annotated stream alone (an iterator with get_state/set_state)."""
    return self.streams.stream_3d

  @property
  def train_wild(self):
    """The wild stream alone, or None when there is no wild source."""
    return self.streams.stream_wild

  def describe(self):
    parts = [f'{k}={_describe_source(v)}' for k, v in self.sources.items()]
    held = 'none' if self.heldout is None else f"{len(self.heldout['image'])} examples"
    if self.validation is not None:
      held += f"; validation {len(self.validation['image'])} crops"
    s3 = self.streams.stream_3d.batch_size
    sw = self.streams.stream_wild.batch_size if self.streams.stream_wild is not None else 0
    return (f"data: {', '.join(parts)}; batches 3d={s3} wild={sw}; heldout {held}; "
            f"stats {Path(self.param_stats.source).name or '?'}; convention {self.convention}")


def _describe_source(src):
  skipped = getattr(src, 'skipped', None)
  if skipped is None:
    return f'{type(src).__name__}({len(src)} rows)'
  return f'{type(src).__name__}({len(src)} rows, {len(skipped)} skipped)'


def stack_examples(source, n=0, keys=None):
  """The first ``n`` (0 = all) examples of a source stacked into batch arrays."""
  n = len(source) if not n else min(n, len(source))
  exs = [source[i] for i in range(n)]
  keys = keys or tuple(exs[0])
  return {k: np.stack([np.asarray(e[k]) for e in exs]) for k in keys}


def _path(value, *default):
  return Path(value) if value else asset(*default)


def _bfm_dir(cfg):
  return _path(cfg.bfm_dir, 'bfm')


def _load_bfm68(cfg):
  d = _bfm_dir(cfg)
  return MM.load(d / 'keypoints68' if (d / 'keypoints68').exists() else d)


def _load_bfm_stats(cfg):
  return P.load_param_stats(cfg.param_stats or _bfm_dir(cfg) / 'param_whitening.pkl')


def _tfds_source(cfg, name, split='train'):
  from dasl_jax.data import tfds_builders
  return tfds_builders.PreparedSource(name, cfg.tfds_data_dir, split=split)


def _source_300wlp(cfg, model, stats):
  if cfg.tfds_data_dir:
    return _tfds_source(cfg, 'dasl_300wlp')
  if not cfg.dir_300wlp:
    raise DaslError('source_3d=300wlp needs --config.data.dir_300wlp '
                    '(the train_aug_120x120 folder)')
  d = Path(cfg.dir_300wlp)
  configs = d.parent / 'train.configs'
  return R.TrainAugSource(
      d, cfg.list_300wlp or configs / 'train_aug_120x120.list.train',
      cfg.params_300wlp or configs / 'param_all_norm.pkl', stats, model, cfg.convention,
      landmark_file=cfg.landmarks_300wlp or None, skip_bad_rows=cfg.skip_bad_rows,
      tolerance=cfg.landmark_tolerance)


def _source_wild(cfg, seed):
  kind = cfg.source_wild
  if kind == 'none':
    return None
  if kind == 'aflw':
    if cfg.tfds_data_dir:
      return _tfds_source(cfg, 'dasl_aflw_wild')
    return R.AflwWildSource(_path(cfg.dir_aflw_wild, 'aflw-wild'),
                            skip_bad_rows=cfg.skip_bad_rows, tolerance=cfg.landmark_tolerance)
  if kind == 'folder':
    if not cfg.dir_wild_folder or not cfg.wild_landmarks:
      raise DaslError('source_wild=folder needs --config.data.dir_wild_folder and '
                      '--config.data.wild_landmarks')
    return R.WildFolderSource(cfg.dir_wild_folder, cfg.wild_landmarks,
                              skip_bad_rows=cfg.skip_bad_rows, tolerance=cfg.landmark_tolerance)
  raise DaslError(f'unknown source_wild {kind!r}; use synthetic, aflw, folder or none')


def _aflw_wild_root(cfg):
  return _path(cfg.dir_aflw_wild, 'aflw-wild')


def _val_names(cfg):
  """The validation names of the aflw-wild list (empty without a split)."""
  if cfg.validation not in ('none', 'aflw_wild'):
    raise DaslError(f'--config.data.validation={cfg.validation!r}: use none or aflw_wild')
  if cfg.validation == 'aflw_wild' and int(cfg.val_size) <= 0:
    raise DaslError('--config.data.validation=aflw_wild needs --config.data.val_size > 0')
  if int(cfg.val_size) <= 0:
    return set()
  names = R.read_list(_aflw_wild_root(cfg) / 'list.txt')
  return set(TEACHER.validation_split(names, int(cfg.val_size), int(cfg.val_seed))[1])


def _teacher_pool(cfg):
  """(image_dir, names) of the crops the teacher labels."""
  if not cfg.teacher_images:
    root = _aflw_wild_root(cfg)
    return root / 'images', R.read_list(root / 'list.txt')
  d = Path(cfg.teacher_images)
  if not d.is_dir():
    raise DaslError(f'--config.data.teacher_images={d}: folder not found')
  if cfg.teacher_list:
    return d, R.read_list(cfg.teacher_list)
  if (d / 'list.txt').exists():
    return d, R.read_list(d / 'list.txt')
  names = sorted(f.name for f in d.iterdir() if f.suffix.lower() in ('.jpg', '.jpeg', '.png'))
  if not names:
    raise DaslError(f'--config.data.teacher_images={d}: no .jpg/.png crops there')
  return d, names


def _teacher_labels(cfg, model):
  """(image_dir, names, (N, 62) de-whitened teacher parameters) of the whole pool."""
  if not cfg.teacher_checkpoint:
    raise DaslError('source_3d=teacher needs --config.data.teacher_checkpoint (a model work '
                    'directory, e.g. from experiments.convert_checkpoint)')
  from dasl_jax.io import checkpoint
  conv = checkpoint.read_model_config(Path(cfg.teacher_checkpoint)).convention
  if conv != cfg.convention:
    raise DaslError(f'--config.data.teacher_checkpoint={cfg.teacher_checkpoint} predicts in '
                    f'pixel convention {conv}; set --config.data.convention={conv}')
  image_dir, names = _teacher_pool(cfg)
  p = TEACHER.teacher_params(cfg.teacher_checkpoint, image_dir, names, model,
                             mirror=bool(cfg.teacher_mirror), cache_dir=cfg.teacher_cache)
  return image_dir, names, p


def _validation(cfg, val_names, teacher=None):
  """The validation dict of :class:`DataBundle` (aflw-wild crops held out by name)."""
  root = _aflw_wild_root(cfg)
  src = R.AflwWildSource(root, skip_bad_rows=True, tolerance=cfg.landmark_tolerance)
  rows = [r for r in range(src.n_rows) if src.names[r] in val_names]
  names = [src.names[r] for r in rows]
  val = {'image': TEACHER.read_crops(root / 'images', names),
         'pts21': src.pts21_crop[rows], 'vis21': src.vis21[rows], 'yaws': src.yaws[rows],
         'names': np.asarray(names)}
  if teacher is not None:
    where = {n: i for i, n in enumerate(teacher['names'])}
    missing = [n for n in names if n not in where]
    if not missing:
      val['teacher_lms68'] = teacher['lms68'][[where[n] for n in names]]
  return val


def build_data(cfg, seed) -> DataBundle:
  """Sources, model, statistics, the two training streams and the held-out set.

  Args:
    cfg: ``config.data`` (see ``dasl_jax.data.config.data_config``).
    seed: the run seed (streams derive their own seeds from it).
  """
  if cfg.convention not in ('v1', 'v2'):
    raise DaslError(f'--config.data.convention: {cfg.convention!r}; use v1 or v2')
  sources = {}
  val_names = _val_names(cfg)
  teacher = None
  dense = MM.load(cfg.dense_model) if cfg.dense_model else None
  syn = None
  uses_synthetic = 'synthetic' in (cfg.source_wild, cfg.heldout)
  if cfg.source_3d in ('synthetic', 'synthetic_bfm') or uses_synthetic:
    # Synthetic faces share the 3D source's model and whitening: the procedural
    # model for source_3d=synthetic, the real BFM otherwise (so a synthetic
    # held-out set next to 300W-LP has labels in the same parameter space).
    from dasl_jax.data import synthetic as SYN
    syn = SYN.synthetic_bundle_parts(
        'synthetic' if cfg.source_3d == 'synthetic' else 'bfm',
        sizes=(cfg.synthetic_size_3d, cfg.synthetic_size_wild, cfg.synthetic_size_heldout),
        seed=cfg.synthetic_seed, convention=cfg.convention, n_stats=cfg.synthetic_stats_samples,
        bfm_dir=None if cfg.source_3d == 'synthetic' else _bfm_dir(cfg),
        label_stats=(P.load_param_stats(cfg.param_stats)
                     if cfg.param_stats and cfg.source_3d != 'synthetic' else None))
  if syn is not None and cfg.synthetic_cache:
    # Rendering costs ~12 ms a face on one core, taken from the training step's
    # CPU; render each set once and share it across runs.
    used = {'3d': cfg.source_3d in ('synthetic', 'synthetic_bfm'),
            'wild': cfg.source_wild == 'synthetic', 'heldout': cfg.heldout == 'synthetic'}
    for kind, on in used.items():
      if on:
        syn[kind].materialize(Path(cfg.synthetic_cache) / syn[kind].cache_name())
  if cfg.source_3d in ('synthetic', 'synthetic_bfm'):
    model, stats = syn['label_model'], syn['param_stats']
    dense = dense if dense is not None else syn['model']
    sources['3d'] = syn['3d']
  elif cfg.source_3d == '300wlp':
    model, stats = _load_bfm68(cfg), _load_bfm_stats(cfg)
    sources['3d'] = _source_300wlp(cfg, model, stats)
  elif cfg.source_3d == 'teacher':
    model, stats = _load_bfm68(cfg), _load_bfm_stats(cfg)
    image_dir, names, tp = _teacher_labels(cfg, model)
    keep = [i for i, n in enumerate(names) if n not in val_names]
    if not keep:
      raise DaslError(f'{image_dir}: every teacher crop is in the validation split')
    teacher = {'names': names, 'params': tp,
               'lms68': R.lms68_from_params(R.LandmarkModelNP(model), tp, cfg.convention)}
    sources['3d'] = TEACHER.TeacherSource(image_dir, [names[i] for i in keep], tp[keep], stats,
                                          model, cfg.convention, skip_bad_rows=cfg.skip_bad_rows,
                                          tolerance=cfg.landmark_tolerance)
  else:
    raise DaslError(f'unknown source_3d {cfg.source_3d!r}; use synthetic, 300wlp, '
                    'synthetic_bfm or teacher')
  if cfg.source_wild == 'synthetic':
    sources['wild'] = syn['wild']
  else:
    wild = _source_wild(cfg, seed)
    if wild is not None:
      if val_names and cfg.source_wild in ('aflw', 'folder') and hasattr(wild, 'rows'):
        wild = TEACHER.NameSubset(wild, set(wild.names) - val_names)
      sources['wild'] = wild
  held = None
  if cfg.heldout == 'synthetic':
    sources['heldout'] = syn['heldout']
  elif cfg.heldout == 'aflw2000':
    sources['heldout'] = (_tfds_source(cfg, 'dasl_aflw2000', split='test') if cfg.tfds_data_dir
                          else R.Aflw2000Source(_path(cfg.dir_aflw2000, 'aflw2000-3d'),
                                                skip_bad_rows=cfg.skip_bad_rows,
                                                tolerance=cfg.landmark_tolerance))
  elif cfg.heldout != 'none':
    raise DaslError(f'unknown heldout {cfg.heldout!r}; use synthetic, aflw2000 or none')
  if 'heldout' in sources:
    held = stack_examples(sources['heldout'], cfg.heldout_size)
  validation = _validation(cfg, val_names, teacher) if cfg.validation == 'aflw_wild' else None
  scheme21, scheme18 = WILD_SCHEME.resolve(cfg, model, sources.get('wild'), teacher, val_names,
                                           _aflw_wild_root(cfg))
  wild_keys = KEYS_WILD
  if scheme18 is not None and teacher is not None and cfg.scheme_flm:
    flm = WILD_SCHEME.flm_points(sources['wild'], scheme18, teacher, model, cfg.convention)
    if flm is not None:
      (sources['wild'].source if isinstance(sources['wild'], TEACHER.NameSubset)
       else sources['wild']).flm_points = flm
      wild_keys = KEYS_WILD + ('flm18',)
  streams = make_streams(cfg, seed, sources['3d'], sources.get('wild'), model, stats,
                         wild_keys=wild_keys)
  return DataBundle(model=model, dense_model=dense, param_stats=stats,
                    convention=cfg.convention, streams=streams, heldout=held, sources=sources,
                    validation=validation, wild_scheme=scheme21, wild_scheme18=scheme18)


def make_streams(cfg, seed, source_3d, source_wild, model, stats, shard=None,
                 wild_keys=KEYS_WILD) -> TrainStreams:
  """The two streams of :func:`build_data` for given sources."""
  aug = cfg.augment if cfg.augment.enabled else None
  warper = AUG.ParamWarper(model, cfg.convention, stats) if aug is not None else None
  common = dict(shuffle=cfg.shuffle, num_threads=cfg.num_threads, prefetch=cfg.prefetch,
                num_workers=cfg.num_workers, worker_buffer=cfg.worker_buffer, shard=shard)
  s3 = stream_seed(seed, 0)
  stream_3d = Stream(source_3d, cfg.batch_size_3d, s3,
                     ExampleMap(KEYS_3D, s3, aug, warper, stats, cfg.opencv_threads), **common)
  stream_wild = None
  if source_wild is not None:
    sw = stream_seed(seed, 1)
    wild_aug = aug if (aug is not None and cfg.augment.wild) else None
    stream_wild = Stream(source_wild, cfg.batch_size_wild, sw,
                         ExampleMap(wild_keys, sw, wild_aug, opencv_threads=cfg.opencv_threads),
                         **common)
  return TrainStreams(stream_3d, stream_wild)
