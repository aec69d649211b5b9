"""Errors of hf_gazecons: each says what went wrong and what to do next.

The command line turns any :class:`GazeConsError` into one line on stderr and the error's
``exit_code``: 2 for bad input (the usage-error status of argparse), 1 for a run that failed.
"""

from __future__ import annotations

__all__ = [
    "GazeConsError",
    "TargetLayerError",
    "DataError",
    "ModelLoadError",
    "MetricError",
    "HubError",
    "UsageError",
    "TrainingError",
]


class GazeConsError(Exception):
    """Base class of the errors this package raises on bad input."""

    exit_code = 2


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


class UsageError(GazeConsError, ValueError):
    """An option's value is out of range, or options contradict each other (checked before any work)."""


class TrainingError(GazeConsError, RuntimeError):
    """A training run went wrong (e.g. its loss stopped being finite): nothing is saved or published."""

    exit_code = 1
