"""The ``pearson`` variant: the consistency of a map with its class map as a centred correlation.

All of the variant in one place (docs/OBJECTIVES.md derives it). For a map ``x`` of ``P``
positions let ``u(x) = (x - mean(x)) / ||x - mean(x)||`` (its centred unit vector; 0 for a
constant map, which has no direction). Then

    l(x, c) = (1 - <u(x), v_c>) / 2        in [0, 1]  (= (1 - Pearson r) / 2)
    l(x, c) = 1                             for a constant map (the all-zero map): the worst value
    v_c     = U_c / ||U_c||,  U_c = sum_{x in D_c+} u(x)      (v_c = 0 when U_c = 0)

``v_c`` is the unit vector that minimises the class's summed deviation, as the arithmetic mean
minimises the paper variant's squared distance, so the metric needs only the running sums
``U_c`` and the counts: ``sum_x l(x, c) = (n_live - ||U_c||) / 2 + n_constant``.

``l`` does not change when a map is scaled or shifted (``a x + b``, ``a > 0``): not by the min-max
normalisation, not by the map's energy. It does not change when every map of a class is inverted
(``1 - x``): a compact on-object map set and its background-lit inverse score the same, where the
cosine of the ``robust`` variant rewards the inverse.

Training uses the same ``l`` against the EMA of the batch means of ``u(x)`` (its direction is the
class map) and adds, for a constant map, the revival term of the ``robust`` variant times the
worst value 1 (:class:`~hf_gazecons.regularizer.GazeConsistencyLoss`), so that a collapsed map has
a gradient back.
"""

from __future__ import annotations

import torch

__all__ = ["PEARSON_WORST", "centred_unit_maps", "has_direction", "pearson_deviation", "pearson_deviation_sum"]

PEARSON_WORST = 1.0
"""The deviation of a constant (all-zero) map, the largest value the variant takes."""

_TOLERANCE = 64 * torch.finfo(torch.float32).eps


def has_direction(maps: torch.Tensor) -> torch.Tensor:
    """(N,) bool: whether each of the (N, ...) maps is non-constant (up to rounding of its mean)."""
    flat = maps.flatten(1)
    spread = torch.linalg.vector_norm(flat - flat.mean(dim=1, keepdim=True), dim=1)
    return spread > _TOLERANCE * flat.shape[1] ** 0.5 * flat.abs().amax(dim=1)


def centred_unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """``u(x)`` of each of the (N, ...) maps, same shape: centred over the positions, unit L2 norm;
    constant maps become 0."""
    flat = maps.flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    norms = torch.linalg.vector_norm(centred, dim=1, keepdim=True)
    live = has_direction(maps)[:, None]
    unit = centred / torch.where(live, norms, torch.ones_like(norms))
    return torch.where(live, unit, torch.zeros_like(unit)).reshape(maps.shape)


def pearson_deviation(maps: torch.Tensor, class_map: torch.Tensor) -> torch.Tensor:
    """``l(x, c)`` of each of the (N, H', W') ``maps`` against ``class_map`` ((H', W') or (N, H', W'));
    the class map's direction ``v_c = u(class_map)``, so any map of the class's shape works (a mean of
    maps, the EMA of ``u``)."""
    flat = maps.flatten(1)
    directions = centred_unit_maps(class_map.reshape(-1, *maps.shape[1:])).flatten(1)
    correlation = (centred_unit_maps(flat) * directions).sum(dim=1)
    return torch.where(has_direction(flat), (1 - correlation) / 2, torch.full_like(correlation, PEARSON_WORST))


def pearson_deviation_sum(count: torch.Tensor, live_count: torch.Tensor, unit_sum: torch.Tensor) -> torch.Tensor:
    """``sum_{x in D_c+} l(x, c)`` per class from running sums: ``count`` (K,) correct maps,
    ``live_count`` (K,) of them non-constant, ``unit_sum`` (K, H', W') the sum of their ``u(x)``."""
    resultant = torch.linalg.vector_norm(unit_sum.flatten(1), dim=1)
    return (live_count - resultant) / 2 + PEARSON_WORST * (count - live_count)
