"""Localisation of a map against a ground-truth mask (docs/METHOD.md, section 10), per sample.

* energy pointing game: the share of the map's mass inside the mask;
* pointing game: whether the map's maximum lies inside the mask.

Maps are upsampled (bilinear) to the mask's resolution first.

    >>> energy_pointing_game(maps, masks).mean(), pointing_game(maps, masks).float().mean()
"""

from __future__ import annotations

import torch

from .cam import resize_maps

__all__ = ["energy_pointing_game", "pointing_game"]


def energy_pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) share of each (H', W') map's mass inside its (H, W) boolean mask; 0 for an all-zero map."""
    maps = resize_maps(maps, tuple(masks.shape[-2:])).flatten(1)
    inside = (maps * masks.flatten(1).to(maps.dtype)).sum(dim=1)
    total = maps.sum(dim=1)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(maps.dtype).tiny), torch.zeros_like(total))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) bool: does the maximum of each upsampled map fall inside its mask."""
    maps = resize_maps(maps, tuple(masks.shape[-2:])).flatten(1)
    peak = maps.argmax(dim=1, keepdim=True)
    return masks.flatten(1).bool().gather(1, peak)[:, 0]
