"""The per-sample deviation of a map from its class map (SPEC eq. 9 and 15), and the common grid.

Two variants:

* ``"paper"`` (default) — the text's squared L2 per pixel:
  ``l(x, c) = (1/(H'W')) * ||CAM^c(x) - mean_c||_2^2``;
* ``"reference"`` — the study's public code, unsquared:
  ``l(x, c) = ||CAM^c(x) - mean_c||_2 / (H'W')``.
"""

from __future__ import annotations

from typing import Literal

import torch

from .cam import resize_maps

__all__ = ["Variant", "VARIANTS", "check_variant", "per_sample_deviation", "class_deviation_sum", "on_grid"]

Variant = Literal["paper", "reference"]
VARIANTS: tuple[Variant, ...] = ("paper", "reference")


def check_variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    return variant  # type: ignore[return-value]


def per_sample_deviation(maps: torch.Tensor, class_map: torch.Tensor, variant: Variant = "paper") -> torch.Tensor:
    """``l(x, c)`` for each of the (N, H', W') ``maps`` against ``class_map`` ((H', W') or (N, H', W'))."""
    diff = (maps - class_map).flatten(1)
    pixels = diff.shape[1]
    if check_variant(variant) == "paper":
        return diff.pow(2).sum(dim=1) / pixels
    return torch.linalg.vector_norm(diff, dim=1) / pixels


def class_deviation_sum(count: torch.Tensor, map_sum: torch.Tensor, square_sum: torch.Tensor) -> torch.Tensor:
    """``sum_{x in D_c+} l(x, c)`` of the paper variant from running sums, per class.

    With ``n = |D_c+|``, ``S = sum_x CAM(x)`` (per pixel) and ``Q = sum_x ||CAM(x)||^2``:
    ``sum_x ||CAM(x) - S/n||^2 = Q - ||S||^2 / n``, divided by ``H'W'`` (eq. 9). The sums merge
    across batches and processes by addition. ``count`` (K,), ``map_sum`` (K, H', W'),
    ``square_sum`` (K,); classes with ``count == 0`` give 0.
    """
    pixels = map_sum[0].numel()
    spread = square_sum - map_sum.flatten(1).pow(2).sum(dim=1) / count.clamp(min=1)
    return spread.clamp(min=0) / pixels


def on_grid(maps: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """Resample maps to the common ``grid`` (bilinear, no renormalisation) or leave them as they are."""
    return maps if grid is None else resize_maps(maps, grid)
