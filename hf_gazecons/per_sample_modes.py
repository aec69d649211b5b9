"""The names of the per-sample gradient modes of Grad-CAM in train mode, importable without torch.

The command lines build their ``--per_sample`` / ``--per-sample`` choices from :data:`PER_SAMPLE_MODES`;
the computation lives in :mod:`hf_gazecons.per_sample` (docs/METHOD.md, per-sample gradients).
"""

from __future__ import annotations

from typing import Literal

from .checks import require

__all__ = ["PerSample", "PER_SAMPLE_MODES", "DEFAULT_PER_SAMPLE", "PER_SAMPLE_HELP", "check_per_sample"]

PerSample = Literal["held_stats", "exact"]
PER_SAMPLE_MODES: tuple[PerSample, ...] = ("held_stats", "exact")
DEFAULT_PER_SAMPLE: PerSample = "held_stats"

PER_SAMPLE_HELP = (
    "how each sample gets the gradient of its own score where a layer after the target mixes the samples "
    "of a batch (BatchNorm in train mode): 'held_stats' (batch-norm statistics held constant in that "
    "gradient; one backward, cost independent of the batch) or 'exact' (the full derivative, one "
    "vector-Jacobian product per sample: cost grows with the square of the batch)"
)


def check_per_sample(mode: str) -> PerSample:
    """``mode`` if it names a per-sample mode, else a :class:`~hf_gazecons.errors.UsageError` that lists them."""
    require(mode in PER_SAMPLE_MODES, f"per_sample must be one of {', '.join(PER_SAMPLE_MODES)}, not {mode!r}")
    return mode  # type: ignore[return-value]
