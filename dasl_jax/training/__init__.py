"""Training: state, optimisers, the compiled 2DASL step, the loop, checkpoints, logging.

``train_and_evaluate(config, workdir)`` in :mod:`dasl_jax.training.loop` is the
entry point; ``experiments/train.py`` only parses flags and calls it.
"""
