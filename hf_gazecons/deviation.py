"""The per-sample deviation of a map from its class map (SPEC eq. 9 and 15), and the common grid.

Four variants:

* ``"paper"`` (default) — the text's squared L2 per pixel:
  ``l(x, c) = (1/(H'W')) * ||CAM^c(x) - mean_c||_2^2``;
* ``"reference"`` — the study's public code, unsquared:
  ``l(x, c) = ||CAM^c(x) - mean_c||_2 / (H'W')``;
* ``"robust"`` — this project's collapse-safe objective: the paper's distance after rescaling the
  map to the L2 norm of its class map ``m_c``,
  ``l(x, c) = (1/(H'W')) * ||CAM^c(x) * ||m_c|| / ||CAM^c(x)|| - m_c||^2
  = w_c * (1 - cos(CAM^c(x), m_c))`` with ``w_c = (2/(H'W')) * ||m_c||^2``,
  and ``w_c`` (the value of a map with no overlap) for a map that is zero everywhere. ``m_c`` is
  the mean of the class's *non-zero* maps, so collapsed maps cannot shrink the scale; a class
  without one gets ``w_c = 2``, the bound of ``w_c`` for maps in [0, 1]. A map can no longer get
  closer to its class by losing energy, and the all-zero map is a worst case, where the paper's
  distance makes it a *best* case whenever ``||CAM||^2 > 2 <CAM, mean_c>``. The values are on the
  paper variant's scale (the two agree for maps of their class map's energy), so the study's
  lambda values carry over. docs/OBJECTIVES.md has the derivation and the measurements behind it.
* ``"pearson"`` — half of one minus the Pearson correlation with the class map, blind to a map's
  energy and to the inversion of a class's maps; its equations are in :mod:`hf_gazecons.pearson`.
"""

from __future__ import annotations

import torch

from .cam import resize_maps
from .pearson import pearson_deviation
from .variants import Variant, check_variant

__all__ = [
    "per_sample_deviation",
    "class_deviation_sum",
    "robust_deviation_sum",
    "worst_robust_deviation",
    "unit_maps",
    "on_grid",
]


def per_sample_deviation(maps: torch.Tensor, class_map: torch.Tensor, variant: Variant = "paper") -> torch.Tensor:
    """``l(x, c)`` for each of the (N, H', W') ``maps`` against ``class_map`` ((H', W') or (N, H', W'))."""
    variant = check_variant(variant)
    if variant == "pearson":
        return pearson_deviation(maps, class_map)
    if variant == "robust":
        maps, class_map = maps.flatten(1), class_map.reshape(-1, maps[0].numel())
        cosine = (unit_maps(maps) * unit_maps(class_map)).sum(dim=1)
        return worst_robust_deviation(class_map) * (1 - cosine)
    diff = (maps - class_map).flatten(1)
    pixels = diff.shape[1]
    if variant == "paper":
        return diff.pow(2).sum(dim=1) / pixels
    return torch.linalg.vector_norm(diff, dim=1) / pixels


def worst_robust_deviation(class_map: torch.Tensor) -> torch.Tensor:
    """``w_c`` of the robust variant for (N, ...) class maps: ``(2/(H'W')) * ||m_c||^2``, and 2 for
    an all-zero class map (a constant: the class map is never differentiated)."""
    energy = class_map.detach().flatten(1).pow(2).mean(dim=1)
    return torch.where(energy > 0, 2 * energy, torch.full_like(energy, 2.0))


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


def robust_deviation_sum(
    count: torch.Tensor, live_count: torch.Tensor, map_sum: torch.Tensor, unit_sum: torch.Tensor
) -> torch.Tensor:
    """``sum_{x in D_c+} l(x, c)`` of the robust variant from running sums, per class.

    ``S = sum_x CAM(x)`` (zero maps add nothing), so the class map ``m_c = S / n_live`` (the mean of
    the ``live_count`` non-zero maps) points along ``S``; with ``U = sum_x CAM(x)/||CAM(x)||``:
    ``sum_x (1 - cos(CAM(x), S)) = n - <U, S> / ||S||``, times ``w_c``. ``unit_sum`` is
    (K, H', W') like ``map_sum``; classes with ``count == 0`` give 0.
    """
    cosine_sum = (unit_sum.flatten(1) * unit_maps(map_sum).flatten(1)).sum(dim=1)
    class_maps = map_sum / live_count.clamp(min=1)[:, None, None]
    return worst_robust_deviation(class_maps) * (count - cosine_sum)


def on_grid(maps: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """Resample maps to the common ``grid`` (area means when shrinking, see ``resize_maps``) or leave them."""
    return maps if grid is None else resize_maps(maps, grid)
