"""``paper``: the study's text, the mean squared difference from the class map (docs/METHOD.md, section 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ClassSums, Variant

if TYPE_CHECKING:
    import torch

__all__ = ["PaperVariant"]


class PaperVariant(Variant):
    """``l(x, c) = (1/(H'W')) ||CAM(x) - m_c||^2``, ``m_c`` the mean of the class's correct maps.

    From sums: with ``n = |D_c+|``, ``S = sum_x CAM(x)`` and ``Q = sum_x ||CAM(x)||^2``,
    ``sum_x ||CAM(x) - S/n||^2 = Q - ||S||^2 / n``, so the metric's memory does not grow with the data.
    """

    name = "paper"
    summary = "mean squared difference, the study's text"

    def deviation(self, maps: torch.Tensor, class_maps: torch.Tensor) -> torch.Tensor:
        diff = (maps - class_maps).flatten(1)
        return diff.pow(2).sum(dim=1) / diff.shape[1]

    def sample_terms(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"square": maps.flatten(1).pow(2).sum(dim=1)}

    def deviation_sums(self, sums: ClassSums) -> torch.Tensor:
        pixels = sums.map_sum[0].numel()
        spread = sums.terms["square"] - sums.map_sum.flatten(1).pow(2).sum(dim=1) / sums.count.clamp(min=1)
        return spread.clamp(min=0) / pixels
