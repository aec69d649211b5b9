"""``reference``: the study's public code, the unsquared norm of the difference (docs/METHOD.md, section 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ClassSums, Variant

if TYPE_CHECKING:
    import torch

__all__ = ["ReferenceVariant"]


class ReferenceVariant(Variant):
    """``l(x, c) = ||CAM(x) - m_c|| / (H'W')``. The norm does not split into sums, so the metric keeps
    every correct map until the class maps are known."""

    name = "reference"
    summary = "unsquared norm, the study's code"
    keeps_maps = True

    def deviation(self, maps: torch.Tensor, class_maps: torch.Tensor) -> torch.Tensor:
        import torch

        diff = (maps - class_maps).flatten(1)
        return torch.linalg.vector_norm(diff, dim=1) / diff.shape[1]

    def deviation_sums(self, sums: ClassSums) -> torch.Tensor:
        class_maps = sums.map_sum / sums.count.clamp(min=1)[:, None, None]
        totals = sums.count.new_zeros(sums.count.shape)
        for c, maps in enumerate(sums.kept):
            for part in maps:  # batch by batch: no second copy of the kept maps
                totals[c] += self.deviation(part.to(class_maps.dtype), class_maps[c]).sum()
        return totals
