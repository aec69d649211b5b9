"""``pearson``: this project's recommended deviation, half of one minus the Pearson correlation of a
map with its class map, blind to a map's energy, offset and to the inversion of a class's maps, with
the all-zero map as the worst case (docs/METHOD.md, section 8; docs/OBJECTIVES.md derives it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ClassSums, Variant

if TYPE_CHECKING:
    import torch

__all__ = ["PearsonVariant", "centred_unit_maps", "has_direction"]

_TOLERANCE = 64 * 2.0**-23
"""64 float32 epsilons: a map whose spread lies below this (relative to its largest value) is constant."""


def has_direction(maps: torch.Tensor) -> torch.Tensor:
    """(N,) bool: whether each of the (N, ...) maps is non-constant (up to rounding of its mean)."""
    import torch

    flat = maps.flatten(1)
    spread = torch.linalg.vector_norm(flat - flat.mean(dim=1, keepdim=True), dim=1)
    return spread > _TOLERANCE * flat.shape[1] ** 0.5 * flat.abs().amax(dim=1)


def centred_unit_maps(maps: torch.Tensor) -> torch.Tensor:
    """``u(x)`` of each of the (N, ...) maps, same shape: centred over the positions, unit L2 norm;
    constant maps become 0."""
    import torch

    flat = maps.flatten(1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    norms = torch.linalg.vector_norm(centred, dim=1, keepdim=True)
    live = has_direction(maps)[:, None]
    unit = centred / torch.where(live, norms, torch.ones_like(norms))
    return torch.where(live, unit, torch.zeros_like(unit)).reshape(maps.shape)


class PearsonVariant(Variant):
    """All of the variant in one place. For a map ``x`` of ``P`` positions let
    ``u(x) = (x - mean(x)) / ||x - mean(x)||`` (its centred unit vector; 0 for a constant map, which
    has no direction). Then

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

    Training uses the same ``l`` against the EMA of the batch means of ``u(x)`` over the non-zero
    maps (:meth:`averaged_maps`; only its direction counts) and revives a collapsed map with the
    worst value 1 times the revival depth.
    """

    name = "pearson"
    summary = "(1 - Pearson r) / 2, blind to energy and inversion; an all-zero map is the worst case"
    zero_map_is_worst = True
    revives_collapsed_maps = True

    worst: float = 1.0
    """The deviation of a constant (all-zero) map, the largest value the variant takes."""

    def deviation(self, maps: torch.Tensor, class_maps: torch.Tensor) -> torch.Tensor:
        """The class map's direction is ``u(class_map)``, so any map of the class's shape serves (a mean
        of maps, the EMA of ``u``)."""
        import torch

        flat = maps.flatten(1)
        directions = centred_unit_maps(class_maps.reshape(-1, *maps.shape[1:])).flatten(1)
        correlation = (centred_unit_maps(flat) * directions).sum(dim=1)
        return torch.where(has_direction(flat), (1 - correlation) / 2, torch.full_like(correlation, self.worst))

    def averaged_maps(self, maps: torch.Tensor) -> torch.Tensor:
        return centred_unit_maps(maps)

    def class_map_count(self, count: torch.Tensor, zero_count: torch.Tensor) -> torch.Tensor:
        return count - zero_count

    def final_class_maps(self, sums: ClassSums) -> torch.Tensor:
        """``U_c``, the sum of the class's ``u(x)``: its direction is ``v_c`` (0 for a class without a
        non-constant map)."""
        return sums.terms["centred_unit"]

    def sample_terms(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"centred_unit": centred_unit_maps(maps), "live": has_direction(maps).to(maps.dtype)}

    def deviation_sums(self, sums: ClassSums) -> torch.Tensor:
        import torch

        live = sums.terms["live"]
        resultant = torch.linalg.vector_norm(sums.terms["centred_unit"].flatten(1), dim=1)
        return (live - resultant) / 2 + self.worst * (sums.count - live)
