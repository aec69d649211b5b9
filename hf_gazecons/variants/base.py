"""What a deviation variant is: :class:`Variant`, the per-class sums it is computed from, and the
zero-map test and revival depth that every variant shares (docs/METHOD.md, sections 3 and 8).

Nothing here imports torch at module level (methods that need its functions import it when they
run), so that the command line can list the variants before torch is loaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

__all__ = ["ClassSums", "Variant", "collapse_depth", "is_zero_map", "registered"]

_REGISTRY: dict[str, type[Variant]] = {}


def is_zero_map(maps: torch.Tensor) -> torch.Tensor:
    """(N,) bool: which of the (N, ...) maps are zero everywhere (a collapsed gaze)."""
    return maps.detach().flatten(1).amax(dim=1) == 0


def collapse_depth(maps: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """For maps that are zero everywhere: how far below zero the best position of ``raw`` (the map
    before ReLU and normalisation) lies, in units of its mean magnitude (a constant); 0 for the
    others. Differentiable through ``raw``: its gradient raises the best position."""
    import torch
    import torch.nn.functional as F

    raw = raw.flatten(1)
    scale = raw.detach().abs().mean(dim=1).clamp(min=torch.finfo(raw.dtype).tiny)
    return torch.where(is_zero_map(maps), F.relu(-raw.amax(dim=1)) / scale, torch.zeros_like(scale))


@dataclass
class ClassSums:
    """Per-class running sums over the correctly classified samples, from which the metric computes
    every variant; they merge by addition across batches and processes.

    ``count`` (K,) samples, ``zero_count`` (K,) of them with an all-zero map, ``map_sum``
    (K, H', W') the sum of their maps, ``terms`` each variant's own sums (keyed by the names of
    :meth:`Variant.sample_terms`), and ``kept`` every map per class, for variants that keep them.
    """

    count: torch.Tensor
    zero_count: torch.Tensor
    map_sum: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    kept: list[list[torch.Tensor]] = field(default_factory=list)


class Variant(ABC):
    """A deviation ``l(x, c)`` of a map from its class map, and everything that follows from it.

    A subclass sets :attr:`name` (its ``--variant`` value) and :attr:`summary` (its line in the
    help), implements :meth:`deviation` and the metric's :meth:`deviation_sums`, and changes the
    class attributes and methods below where it differs from the study's rules. Defining the class
    registers it.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    zero_map_is_worst: ClassVar[bool] = False
    """An all-zero map scores the largest deviation (collapse cannot lower the penalty)."""
    revives_collapsed_maps: ClassVar[bool] = False
    """Training adds the revival term to a collapsed map's deviation (see :meth:`penalty`)."""
    keeps_maps: ClassVar[bool] = False
    """The metric needs every correct map (memory grows with the data); otherwise sums suffice and
    the metric computes the variant beside any other one asked for."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.name] = cls

    @abstractmethod
    def deviation(self, maps: torch.Tensor, class_maps: torch.Tensor) -> torch.Tensor:
        """(N,) ``l(x, c)`` of the (N, H', W') ``maps`` against ``class_maps`` ((H', W') or (N, H', W'))."""

    @abstractmethod
    def deviation_sums(self, sums: ClassSums) -> torch.Tensor:
        """(K,) ``sum_{x in D_c+} l(x, c)`` per class, from the metric's running ``sums``, with the
        class map :meth:`class_map_count` defines (classes without samples give 0)."""

    def sample_terms(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample quantities (first dim N) whose per-class sums :meth:`deviation_sums` needs beside
        the count, the zero count and the map sum; a key names one quantity for every variant."""
        return {}

    def averaged_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """What each of the (N, H', W') ``maps`` adds to its class map, same shape (the study: the map
        itself); training's EMA follows the batch means of these."""
        return maps

    def class_map_count(self, count: torch.Tensor, zero_count: torch.Tensor) -> torch.Tensor:
        """How many of a class's maps its class map averages (the study: all of them); zero maps add
        nothing to the sum, so the class map is the sum of :meth:`averaged_maps` over ``class_map_count``."""
        return count

    def final_class_maps(self, sums: ClassSums) -> torch.Tensor:
        """(K, H', W') each class's map at the end of an evaluation, the one :meth:`deviation_sums`
        measures against: the sum of :meth:`averaged_maps` over :meth:`class_map_count` maps."""
        return sums.map_sum / self.class_map_count(sums.count, sums.zero_count).clamp(min=1)[:, None, None]

    def zero_map_value(self, class_maps: torch.Tensor) -> torch.Tensor:
        """(N,) the deviation of an all-zero map from each of the (N, H', W') ``class_maps``."""
        return self.deviation(class_maps.new_zeros(class_maps.shape), class_maps)

    def penalty(self, maps: torch.Tensor, class_maps: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) the deviations training penalises: :meth:`deviation`, and where the variant
        :attr:`revives_collapsed_maps` and ``raw`` (the maps before ReLU) is given, a collapsed map's
        ``zero_map_value * collapse_depth`` on top, the gradient that brings it back."""
        deviations = self.deviation(maps, class_maps)
        if self.revives_collapsed_maps and raw is not None:
            deviations = deviations + self.zero_map_value(class_maps).detach() * collapse_depth(maps, raw)
        return deviations

    def __repr__(self) -> str:
        return f"<variant {self.name}>"


def registered() -> dict[str, type[Variant]]:
    """The variant classes defined so far, by name."""
    return dict(_REGISTRY)
