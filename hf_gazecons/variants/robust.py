"""``robust``: this project's collapse-safe deviation, ``w_c (1 - cos)`` against the class map of the
non-zero maps, with the all-zero map as the worst case (docs/METHOD.md, section 8; docs/OBJECTIVES.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ClassSums, Variant

if TYPE_CHECKING:
    import torch

__all__ = ["RobustVariant", "unit_maps"]


def unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each map (the dims after the first) divided by its L2 norm; all-zero maps stay zero."""
    import torch

    flat = maps.flatten(1)
    norms = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return (flat / safe).reshape(maps.shape)


class RobustVariant(Variant):
    """The paper's distance after rescaling the map to the norm of its class map ``m_c``:
    ``l(x, c) = (1/(H'W')) ||CAM(x) ||m_c|| / ||CAM(x)|| - m_c||^2 = w_c (1 - cos(CAM(x), m_c))``
    with ``w_c = (2/(H'W')) ||m_c||^2`` (:meth:`worst_case`), which an all-zero map scores.

    ``m_c`` is the mean of the class's non-zero maps, so collapsed maps cannot shrink the scale; a
    class without one has ``w_c = 2``, the bound of ``w_c`` for maps in [0, 1]. Training adds the
    revival term to collapsed maps. From sums: ``S = sum_x CAM(x)`` points along ``m_c``, and with
    ``U = sum_x CAM(x)/||CAM(x)||``, ``sum_x (1 - cos(CAM(x), m_c)) = n - <U, S> / ||S||``.
    """

    name = "robust"
    summary = "1 - cosine; an all-zero map is the worst case"
    zero_map_is_worst = True
    revives_collapsed_maps = True

    def worst_case(self, class_maps: torch.Tensor) -> torch.Tensor:
        """(N,) ``w_c`` of (N, H', W') class maps: ``(2/(H'W')) ||m_c||^2``, and 2 for an all-zero
        class map (a constant: the class map is never differentiated)."""
        import torch

        energy = class_maps.detach().flatten(1).pow(2).mean(dim=1)
        return torch.where(energy > 0, 2 * energy, torch.full_like(energy, 2.0))

    def deviation(self, maps: torch.Tensor, class_maps: torch.Tensor) -> torch.Tensor:
        maps, class_maps = maps.flatten(1), class_maps.reshape(-1, maps[0].numel())
        cosine = (unit_maps(maps) * unit_maps(class_maps)).sum(dim=1)
        return self.worst_case(class_maps) * (1 - cosine)

    def class_map_count(self, count: torch.Tensor, zero_count: torch.Tensor) -> torch.Tensor:
        return count - zero_count

    def sample_terms(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"unit": unit_maps(maps)}

    def deviation_sums(self, sums: ClassSums) -> torch.Tensor:
        cosine_sum = (sums.terms["unit"].flatten(1) * unit_maps(sums.map_sum).flatten(1)).sum(dim=1)
        live = self.class_map_count(sums.count, sums.zero_count)
        class_maps = sums.map_sum / live.clamp(min=1)[:, None, None]
        return self.worst_case(class_maps) * (sums.count - cosine_sum)
