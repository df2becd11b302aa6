"""Every data hyper-parameter in one ConfigDict (``config.data`` of a run).

Sources:

* ``source_3d``: ``synthetic`` (rendered faces, needs nothing), ``300wlp``
  (3DDFA's ``train_aug_120x120`` layout under ``dir_300wlp``),
  ``synthetic_bfm`` (synthetic faces on the real BFM from ``bfm_dir``), or
  ``teacher`` (real crops labelled by ``teacher_checkpoint``);
* ``source_wild``: ``synthetic``, ``aflw`` (``dir_aflw_wild``, the aflw-wild
  crops), ``folder`` (``dir_wild_folder`` + ``wild_landmarks``) or ``none``;
* ``heldout``: ``synthetic`` or ``aflw2000`` (``dir_aflw2000``) or ``none``;
* ``validation``: ``aflw_wild`` (the ``val_size`` crops held out of every training
  source) or ``none``: what checkpoints and hyper-parameters are chosen on.

Any real source may instead be read from a prepared TFDS dataset
(``tfds_data_dir`` non-empty; see ``experiments/prepare_data.py``).
"""
from __future__ import annotations

import ml_collections


def data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # --- sources
  c.source_3d = 'synthetic'          # synthetic | 300wlp | synthetic_bfm | teacher
  c.source_wild = 'synthetic'        # synthetic | aflw | folder | none
  c.heldout = 'synthetic'            # synthetic | aflw2000 | none
  c.convention = 'v1'                # crop pixel convention of labels (camera.CONVENTIONS)
  c.bfm_dir = ''                     # '' = <assets>/bfm; its keypoints68/ is the 68-point model
  # Whitening of the 62-parameter labels ('' = <bfm_dir>/param_whitening.pkl, 3DDFA / 2DASL);
  # set it to the init checkpoint's (3DDFA_V2: param_mean_std_62d_120x120.pkl) when fine-tuning.
  c.param_stats = ''
  c.dense_model = ''                 # optional full model for WPDC vertex sampling ('' = none)
  # 300W-LP, 3DDFA train_aug_120x120 layout.
  c.dir_300wlp = ''                  # folder holding the images (train_aug_120x120/)
  # list of image names ('' = <dir>/../train.configs/train_aug_120x120.list.train)
  c.list_300wlp = ''
  c.params_300wlp = ''               # (N, 62) whitened labels ('' = .../param_all_norm.pkl)
  # FLM detector landmarks, `name,x1,y1,...,x68,y68` ('' = none: the FLM uses GT lms68)
  c.landmarks_300wlp = ''
  # source_3d=teacher: real crops labelled once by a frozen model checkpoint (data/teacher.py).
  c.teacher_checkpoint = ''          # model work dir (e.g. the converted start model)
  c.teacher_images = ''              # folder of crops ('' = the aflw-wild images)
  c.teacher_list = ''                # names in it ('' = list.txt there, else every .jpg/.png)
  c.teacher_mirror = True            # average with the mirrored prediction on the flipped crop
  c.teacher_cache = ''               # folder for the labels' .npz ('' = no cache)
  # Validation split of the aflw-wild crops: held out of every training source (wild and
  # teacher) by name, with a seed of its own so every run holds out the same crops.
  c.val_size = 0                     # 0 = no validation split
  c.val_seed = 0
  c.validation = 'none'              # none | aflw_wild (the held-out crops: 21-point NME)
  # In-the-wild sets.
  c.dir_aflw_wild = ''               # '' = <assets>/aflw-wild
  c.dir_wild_folder = ''             # images folder for source_wild=folder
  c.wild_landmarks = ''              # CSV / 3DDFA list of landmarks (68, 21 or 18 points)
  c.dir_aflw2000 = ''                # '' = <assets>/aflw2000-3d
  # Which points of the face the wild labels name (face_model/schemes.py): ibug (the
  # labels are read as iBUG-68's points, as 2DASL does), fit (AFLW's own definitions:
  # offsets fitted on the training crops with the teacher's parameters; needs
  # source_3d=teacher or teacher_checkpoint, and source_wild=aflw), or a scheme .json file.
  c.wild_scheme = 'ibug'
  # The scheme of the validation NME on AFLW's labels: auto (the wild labels' own 21-point
  # scheme, none without one), fit (AFLW's definitions fitted as above, whatever the wild
  # labels are), none, or a scheme .json file.
  c.val_scheme = 'auto'
  # With a fitted scheme and a teacher: the wild FLM channel is drawn from the labels moved
  # into iBUG's definitions by the teacher's pose (the test-time FLM is iBUG's).
  c.scheme_flm = True
  # Prepared TFDS datasets (read with tfds.data_source, no TensorFlow).
  c.tfds_data_dir = ''               # '' = read the raw files
  # --- synthetic sizes
  c.synthetic_size_3d = 2048
  c.synthetic_size_wild = 2048
  c.synthetic_size_heldout = 256
  c.synthetic_seed = 0               # the synthetic datasets' own seed (fixed faces)
  c.synthetic_cache = ''             # folder: render each synthetic set once into an .npz there
  c.synthetic_stats_samples = 10000  # draws for the synthetic whitening statistics
  c.heldout_size = 0                 # 0 = all of the held-out source
  # --- stream
  c.batch_size_3d = 8
  c.batch_size_wild = 8
  c.shuffle = True
  c.num_threads = 4                  # Grain read threads per stream
  c.prefetch = 64                    # Grain per-stream read-ahead buffer (examples)
  c.num_workers = 0                  # >0: worker processes (mp_prefetch)
  c.worker_buffer = 2                # batches buffered per worker process
  c.opencv_threads = -1              # cv2.setNumThreads where examples are read (-1: OpenCV's own pool)
  c.skip_bad_rows = False            # skip (and count) broken rows instead of failing
  c.landmark_tolerance = 0.5         # points farther than this x crop size outside the crop are bad
  # --- augmentation (per example, deterministic from the seed and the example's position)
  c.augment = ml_collections.ConfigDict()
  c.augment.enabled = True
  c.augment.flip = 0.5               # probability of a horizontal flip
  c.augment.max_shift = 0.05         # fraction of the crop size
  c.augment.max_scale = 0.05         # |log scale| bound: scale in [exp(-m), exp(m)]
  c.augment.brightness = 0.2         # additive, fraction of 255
  c.augment.contrast = 0.2           # multiplicative around the mean: [1-c, 1+c]
  c.augment.saturation = 0.2         # blend with grey: [1-s, 1+s]
  c.augment.wild = True              # augment the wild stream too
  return c


def get_config() -> ml_collections.ConfigDict:
  """For ``config_flags.DEFINE_config_file`` users."""
  return data_config()
