"""Errors of hf_gazecons: each says what went wrong and what to do next.

The command line turns any :class:`GazeConsError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

__all__ = [
    "GazeConsError",
    "TargetLayerError",
    "DataError",
    "ModelLoadError",
    "MetricError",
    "HubError",
]


class GazeConsError(Exception):
    """Base class of the errors this package raises on bad input."""


class TargetLayerError(GazeConsError, ValueError):
    """The target layer cannot be resolved or yields no spatial map."""


class DataError(GazeConsError, ValueError):
    """A data set, split, column, label or image is missing or unusable."""


class ModelLoadError(GazeConsError, ValueError):
    """A model specification cannot be resolved or loaded."""


class MetricError(GazeConsError, ValueError):
    """The metric cannot be computed on what was given."""


class HubError(GazeConsError, RuntimeError):
    """A request to the Hugging Face Hub failed."""
