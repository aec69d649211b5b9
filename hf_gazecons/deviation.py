"""The per-sample deviation of a map from its class map (SPEC eq. 9 and 15), and the common grid.

Three variants:

* ``"paper"`` (default) — the text's squared L2 per pixel:
  ``l(x, c) = (1/(H'W')) * ||CAM^c(x) - mean_c||_2^2``;
* ``"reference"`` — the study's public code, unsquared:
  ``l(x, c) = ||CAM^c(x) - mean_c||_2 / (H'W')``;
* ``"robust"`` — this project's collapse-safe objective, the cosine distance:
  ``l(x, c) = 1 - <CAM^c(x), mean_c> / (||CAM^c(x)||_2 ||mean_c||_2)``, and ``l = 1`` when either
  map is zero everywhere. For non-negative maps it lies in ``[0, 1]``, and the all-zero map is a
  worst case (as far from the class as a map with no overlap), where the paper's distance makes it
  a *best* case whenever ``||CAM||^2 > 2 <CAM, mean_c>``. It compares where a map looks, not how
  much of it is lit, and does not depend on the map's resolution as ``1/(H'W')`` does.
  docs/OBJECTIVES.md has the derivation and the measurements behind the choice.
"""

from __future__ import annotations

import torch

from .cam import resize_maps
from .variants import Variant, check_variant

__all__ = [
    "per_sample_deviation",
    "class_deviation_sum",
    "cosine_deviation_sum",
    "unit_maps",
    "on_grid",
]


def per_sample_deviation(maps: torch.Tensor, class_map: torch.Tensor, variant: Variant = "paper") -> torch.Tensor:
    """``l(x, c)`` for each of the (N, H', W') ``maps`` against ``class_map`` ((H', W') or (N, H', W'))."""
    variant = check_variant(variant)
    if variant == "robust":
        maps, class_map = maps.flatten(1), class_map.reshape(-1, maps[0].numel())
        return 1 - (unit_maps(maps) * unit_maps(class_map)).sum(dim=1)
    diff = (maps - class_map).flatten(1)
    pixels = diff.shape[1]
    if variant == "paper":
        return diff.pow(2).sum(dim=1) / pixels
    return torch.linalg.vector_norm(diff, dim=1) / pixels


def unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each map (along the last dims after the first) divided by its L2 norm; all-zero maps stay zero."""
    flat = maps.flatten(1)
    norms = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return (flat / safe).reshape(maps.shape)


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


def cosine_deviation_sum(count: torch.Tensor, map_sum: torch.Tensor, unit_sum: torch.Tensor) -> torch.Tensor:
    """``sum_{x in D_c+} l(x, c)`` of the robust variant from running sums, per class.

    The class map ``mean_c = S/n`` points along ``S``, so with ``U = sum_x CAM(x)/||CAM(x)||`` (zero
    maps add nothing): ``sum_x (1 - cos(CAM(x), S)) = n - <U, S> / ||S||``, and ``n`` when ``S = 0``
    (every map of the class is zero). ``unit_sum`` is (K, H', W') like ``map_sum``.
    """
    directions = unit_maps(map_sum).flatten(1)
    return count - (unit_sum.flatten(1) * directions).sum(dim=1)


def on_grid(maps: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """Resample maps to the common ``grid`` (area means when shrinking, see ``resize_maps``) or leave them."""
    return maps if grid is None else resize_maps(maps, grid)
