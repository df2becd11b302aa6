"""What the training loop asks of its data: one typed protocol.

``data.pipeline.DataBundle`` (the Grain streams of ``build_data``) and
``training.fake_data.FakeData`` (tests and smoke runs) implement it, and the
loop uses nothing else. Batches are dicts of host arrays in the format of
docs/ARCHITECTURE.md "Batches".
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, Tuple, runtime_checkable

from dasl_jax.geometry.params import ParamStats


@runtime_checkable
class TrainData(Protocol):
  """A run's data.

  Attributes:
    model: the 68-landmark ``MorphableModel`` of the labels and the losses.
    dense_model: the model WPDC samples vertices from, or None (then ``model``).
    param_stats: whitening of the ``params`` labels.
    convention: crop pixel convention of the labels, 'v1' or 'v2'.
    heldout: the held-out set (``image``, ``points18``, ``mask18``, ``lms68``) or None.
    validation: the validation crops (``image``, ``pts21``, ``vis21``, ``yaws``, maybe
      ``teacher_lms68``) or None.
    wild_scheme, wild_scheme18: the wild labels' scheme (``face_model.schemes``, made by
      ``data/wild_scheme.py``): its 21 points (validation) and the 18 of the 2D terms;
      None when the labels are read as iBUG's points.
    has_wild: whether :meth:`next` gives in-the-wild batches.
  """
  model: Any
  dense_model: Optional[Any]
  param_stats: ParamStats
  convention: str
  heldout: Optional[dict]
  validation: Optional[dict]
  wild_scheme: Optional[Any]
  wild_scheme18: Optional[Any]

  @property
  def has_wild(self) -> bool: ...

  def next(self) -> Tuple[dict, Optional[dict]]:
    """The next training batches: (3D-annotated, in-the-wild or None)."""

  def get_state(self) -> dict:
    """The position in both streams, JSON-able (saved with every checkpoint)."""

  def set_state(self, state: dict) -> None:
    """Go back to a position :meth:`get_state` gave (resume)."""

  def close(self) -> None:
    """Stop read threads and worker processes."""

  def source_rows(self) -> dict:
    """Rows of the training sources (``{'3d_rows': n, 'wild_rows': m}``; {} when endless)."""
