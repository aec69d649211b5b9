"""Localisation of a map against a ground-truth mask (docs/METHOD.md, section 10), per sample, with
the references that make a score readable.

* energy pointing game (EPG): the share of the map's mass inside the mask, the map upsampled
  bilinearly to the mask first. Chance: the mask's share of the image (what a uniform map scores).
* pointing game (PG, Zhang et al., "Top-down neural attention by excitation backprop", 2016): a hit
  when the map's peak lies within ``tolerance`` pixels of the mask (they use 15 px at 224 px).
  The peak is the centre of mass of the map's maximal cells, placed where bilinear upsampling
  (``align_corners=False``) puts cell centres: the argmax of the upsampled map is a plateau that
  upsampling clamps at the image border, and its first pixel can lie outside an object that the
  map covers perfectly. Chance: the share of the image within ``tolerance`` of the mask (a peak
  placed uniformly at random).
* the perfect map: the mask averaged onto the map's own grid, the best a map of that grid can
  draw; its EPG and PG are the figures' other anchor (a sharper map can exceed its EPG).

An all-zero map has no location (its "peak" would be the image centre): :func:`localization_sums`
leaves such maps out and counts them.

    >>> energy_pointing_game(maps, masks).mean(), pointing_game(maps, masks, tolerance=15).float().mean()
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .cam import resize_maps

__all__ = [
    "DEFAULT_TOLERANCE",
    "LOCALIZATION_SUMS",
    "Localization",
    "LocalizationScores",
    "energy_pointing_game",
    "localization_sums",
    "peak_pixels",
    "perfect_maps",
    "pointing_chance",
    "pointing_game",
]

DEFAULT_TOLERANCE = 0.0
"""Pointing-game tolerance in pixels unless told otherwise: the peak must lie on the mask."""

LOCALIZATION_SUMS = (
    "n_with_mask",
    "n_zero_maps",
    "energy_pointing_game",
    "pointing_game",
    "energy_pointing_game_chance",
    "energy_pointing_game_perfect",
    "pointing_game_chance",
    "pointing_game_perfect",
)
"""The columns of :func:`localization_sums`: counts, then sums over the non-zero maps."""


def energy_pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) share of each (H', W') map's mass inside its (H, W) boolean mask; 0 for an all-zero map."""
    maps = resize_maps(maps, tuple(masks.shape[-2:])).flatten(1)
    inside = (maps * masks.flatten(1).to(maps.dtype)).sum(dim=1)
    total = maps.sum(dim=1)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(maps.dtype).tiny), torch.zeros_like(total))


def peak_pixels(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 2) row and column, in an image of ``size``, of the centre of mass of each map's maximal
    cells (cell (i, j) of an h x w map centred at ``((i + 0.5) H / h - 0.5, (j + 0.5) W / w - 0.5)``),
    rounded to the nearest pixel."""
    height, width = size
    h, w = maps.shape[-2:]
    top = maps.flatten(1).amax(dim=1)[:, None, None]
    at_top = (maps == top).to(torch.float64)
    rows = (torch.arange(h, dtype=torch.float64, device=maps.device) + 0.5) * height / h - 0.5
    cols = (torch.arange(w, dtype=torch.float64, device=maps.device) + 0.5) * width / w - 0.5
    count = at_top.sum(dim=(1, 2))
    row = (at_top.sum(dim=2) * rows).sum(dim=1) / count
    col = (at_top.sum(dim=1) * cols).sum(dim=1) / count
    peak = torch.stack([torch.floor(row + 0.5), torch.floor(col + 0.5)], dim=1).long()
    return torch.minimum(peak.clamp(min=0), torch.tensor([height - 1, width - 1], device=maps.device))


def _near_mask(masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(N, H, W) bool: pixels within ``tolerance`` (Euclidean, in pixels) of a mask pixel."""
    masks = masks.bool()
    if tolerance <= 0:
        return masks
    radius = math.floor(tolerance)
    offsets = torch.arange(-radius, radius + 1, device=masks.device, dtype=torch.float32)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= tolerance**2).float()
    reached = F.conv2d(masks[:, None].float(), disk[None, None], padding=radius)[:, 0]
    return reached > 0


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = DEFAULT_TOLERANCE) -> torch.Tensor:
    """(N,) bool: does each map's peak (:func:`peak_pixels`) lie within ``tolerance`` pixels of its
    (H, W) mask. An all-zero map's peak is the image centre: leave such maps out."""
    peaks = peak_pixels(maps, tuple(masks.shape[-2:]))
    near = _near_mask(masks, tolerance)
    return near[torch.arange(len(near), device=near.device), peaks[:, 0], peaks[:, 1]]


def pointing_chance(masks: torch.Tensor, tolerance: float = DEFAULT_TOLERANCE) -> torch.Tensor:
    """(N,) the pointing game of a peak placed uniformly at random: the share of pixels within
    ``tolerance`` of the mask."""
    return _near_mask(masks, tolerance).flatten(1).double().mean(dim=1)


def perfect_maps(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) the masks averaged onto a map grid (each cell the object's share of its area)."""
    return resize_maps(masks.float(), grid)


def localization_sums(
    maps: torch.Tensor,
    masks: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    tolerance: float = DEFAULT_TOLERANCE,
) -> torch.Tensor:
    """(num_classes, 8) float64 per-class sums, columns :data:`LOCALIZATION_SUMS`, of samples whose
    (H, W) mask marks an object: their count, their all-zero maps, then over the others the EPG, PG
    hits, and both games' chance and perfect-map values."""
    sums = torch.zeros(num_classes, len(LOCALIZATION_SUMS), dtype=torch.float64)
    classes = classes.cpu().long()
    zero = maps.flatten(1).amax(dim=1) <= 0
    sums[:, 0].index_add_(0, classes, torch.ones(len(classes), dtype=torch.float64))
    sums[:, 1].index_add_(0, classes, zero.cpu().double())
    keep = ~zero
    if keep.any():
        maps, masks, kept = maps[keep], masks[keep].bool(), classes[keep.cpu()]
        perfect = perfect_maps(masks, tuple(maps.shape[-2:]))
        columns = [
            energy_pointing_game(maps, masks),
            pointing_game(maps, masks, tolerance),
            masks.flatten(1).double().mean(dim=1),
            energy_pointing_game(perfect, masks),
            pointing_chance(masks, tolerance),
            pointing_game(perfect, masks, tolerance),
        ]
        for column, values in enumerate(columns, start=2):
            sums[:, column].index_add_(0, kept, values.detach().cpu().double())
    return sums


@dataclass
class LocalizationScores:
    """Means over the samples with a mask whose map is not all zero (``n`` of them; ``n_zero_maps``
    all-zero maps left out): EPG and PG, each beside its chance and perfect-map value."""

    energy_pointing_game: float | None
    pointing_game: float | None
    energy_pointing_game_chance: float | None
    energy_pointing_game_perfect: float | None
    pointing_game_chance: float | None
    pointing_game_perfect: float | None
    n: int
    n_zero_maps: int = 0

    @classmethod
    def from_sums(cls, sums: torch.Tensor) -> LocalizationScores:
        """From one row of :func:`localization_sums`."""
        with_mask, zero, *totals = sums.tolist()
        scored = with_mask - zero
        means = [total / scored if scored else None for total in totals]
        return cls(*means, n=int(scored), n_zero_maps=int(zero))

    @property
    def zero_map_share(self) -> float | None:
        """All-zero maps among the samples with a mask."""
        total = self.n + self.n_zero_maps
        return self.n_zero_maps / total if total else None

    @property
    def pointing_game_interval(self) -> tuple[float, float] | None:
        """95 % Wilson interval of the pointing game (a share of ``n`` hits or misses)."""
        from .stats import proportion_interval

        return None if self.pointing_game is None else proportion_interval(self.pointing_game * self.n, self.n)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the interval a list)."""
        interval = self.pointing_game_interval
        return {**asdict(self), "zero_map_share": self.zero_map_share,
                "pointing_game_interval": list(interval) if interval else None}  # fmt: skip


@dataclass
class Localization(LocalizationScores):
    """:class:`LocalizationScores` of every class together, the pointing game's ``tolerance`` in
    pixels, and the scores of each class (``per_class``; a mean over classes hides a class at 0)."""

    tolerance: float = DEFAULT_TOLERANCE
    per_class: dict[str, LocalizationScores] = field(default_factory=dict)

    @classmethod
    def from_class_sums(cls, sums: torch.Tensor, label_names: list[str], tolerance: float) -> Localization | None:
        """From :func:`localization_sums` (one row per class); None when no sample had a mask."""
        if sums[:, 0].sum() == 0:
            return None
        overall = LocalizationScores.from_sums(sums.sum(dim=0))
        per_class = {name: LocalizationScores.from_sums(row) for name, row in zip(label_names, sums) if row[0] > 0}
        return cls(**asdict(overall), tolerance=tolerance, per_class=per_class)

    def to_dict(self) -> dict[str, Any]:
        own = {k: v for k, v in super().to_dict().items() if k != "per_class"}
        return {**own, "per_class": {name: scores.to_dict() for name, scores in self.per_class.items()}}
