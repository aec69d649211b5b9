"""The per-sample deviation of a map from its class map under any variant, and the common grid
(docs/METHOD.md, sections 3 and 9).

The variants themselves (``paper``, ``reference``, ``robust``, ``pearson``) are :mod:`hf_gazecons.variants`.

    >>> per_sample_deviation(maps, class_map, "robust")       # (N,) l(x, c)
    >>> on_grid(maps, (7, 7))                                 # every map on one 7x7 grid
"""

from __future__ import annotations

import torch

from .cam import resize_maps
from .variants import DEFAULT_VARIANT, Variant, get_variant

__all__ = ["per_sample_deviation", "on_grid"]


def per_sample_deviation(
    maps: torch.Tensor, class_map: torch.Tensor, variant: str | Variant = DEFAULT_VARIANT
) -> torch.Tensor:
    """``l(x, c)`` for each of the (N, H', W') ``maps`` against ``class_map`` ((H', W') or (N, H', W'))."""
    return get_variant(variant).deviation(maps, class_map)


def on_grid(maps: torch.Tensor, grid: tuple[int, int] | None) -> torch.Tensor:
    """Resample maps to the common ``grid`` (area means when shrinking, see ``resize_maps``) or leave them."""
    return maps if grid is None else resize_maps(maps, grid)
