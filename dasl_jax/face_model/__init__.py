"""Morphable models: the pytree and every loader (morphable_model), the BFM
models a checkpoint is read with (bfm) and the built-in procedural model
(synthetic).
"""
