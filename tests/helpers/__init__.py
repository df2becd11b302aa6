"""Helpers the tests share; no test module imports another test module.

* ``asset_marks``: where the real research files are, and the skip marker for them;
* ``dataset_files``: small datasets written in the real file layouts;
* ``random_models``: small random model checkpoints (inference, export, notebook);
* ``tiny_training``: a tiny regressor and a compiled step built around it;
* ``train_runs``: ``python -m experiments.train`` in a subprocess, the shared
  uninterrupted reference run, and readers of a work directory;
* ``torch_files``: PyTorch's checkpoint formats written by hand (no torch);
* ``flm_reference``: the FLM map drawn by a plain loop.

Names never repeat a package module's (``training/fake_data.py`` and a test
helper of that name were easy to mix up).
"""
