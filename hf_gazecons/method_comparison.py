"""Every CAM method on one data set in one pass, and whether the methods agree on which images
are inconsistent (``hf-gazecons score --cam-method all``).

Per batch, one forward (and one gradient) serves all the gradient methods and Eigen-CAM; Score-CAM
adds its masked forwards (:meth:`~hf_gazecons.cam.CAM.maps`). Each method gets its own
:class:`~hf_gazecons.consistency_result.ConsistencyResult` (L_CAM under each variant, zero share,
localisation). The agreement between two methods is the Spearman rank correlation
(``scipy.stats.spearmanr``) of their per-image deviations ``l(x, c)`` over the correctly classified
images of the classes with at least 2 of them (those L_CAM averages over); an image's deviation is
taken from its class's *final* class map, so the correct samples' maps (at the metric's grid) are
kept for the whole pass: ``4 * H' * W'`` bytes per image and method (196 B at 7x7: 100 000 images
under 8 methods are 157 MB), refused beyond ``max_kept_bytes`` (default: half the memory available).

    >>> comparison = compare_cam_methods(load_model("out/run"), load_image_dataset("builtin:shapes", "test"))
    >>> print(comparison.table())
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .cam import CAMOutput
from .cam_family import cam_methods, get_cam_method
from .consistency_result import ConsistencyResult
from .deviation import on_grid
from .errors import MetricError
from .formatting import fmt_metric
from .metric import REFERENCE_BYTES_PER_PIXEL, reference_memory_limit, scoring_options, scoring_pass
from .models import LoadedModel
from .variants import DEFAULT_VARIANT, Variant, get_variant, is_zero_map

__all__ = ["KeptMaps", "MethodComparison", "compare_cam_methods", "per_image_deviations"]


@dataclass
class KeptMaps:
    """The maps (at ``grid``) of every correctly classified sample, per method, with their classes,
    in the order seen (the same samples for every method: they share the predictions)."""

    grid: tuple[int, int] | None = None
    max_kept_bytes: int | None = None
    expected_samples: int | None = None
    maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    classes: list[torch.Tensor] = field(default_factory=list)
    kept_bytes: int = 0

    def __call__(self, outputs: dict[str, CAMOutput], labels: torch.Tensor) -> None:
        """Keep one batch (the ``on_batch`` of :func:`~hf_gazecons.metric.scoring_pass`)."""
        labels = labels.cpu().long()
        first = next(iter(outputs.values()))
        correct = first.logits.detach().float().cpu().argmax(dim=1) == labels
        grids = {m: on_grid(out.maps.detach().float().cpu(), self.grid)[correct] for m, out in outputs.items()}
        per_sample = sum(math.prod(g.shape[1:]) for g in grids.values()) * REFERENCE_BYTES_PER_PIXEL
        self._check_memory(per_sample, int(correct.sum()))
        for method, maps in grids.items():
            self.maps.setdefault(method, []).append(maps)
        self.classes.append(labels[correct])

    def _check_memory(self, per_sample: int, adding: int) -> None:
        limit = self.max_kept_bytes if self.max_kept_bytes is not None else reference_memory_limit()
        first, self.kept_bytes = self.kept_bytes == 0, self.kept_bytes + per_sample * adding
        if limit is None:
            return
        if first and self.expected_samples and self.expected_samples * per_sample > limit:
            need = f"{self.expected_samples} samples may need {self.expected_samples * per_sample / 2**20:,.1f} MiB"
        elif self.kept_bytes > limit:
            need = f"the kept maps passed {self.kept_bytes / 2**20:,.1f} MiB"
        else:
            return
        raise MetricError(
            f"comparing CAM methods keeps every correct sample's map under every method ({per_sample} bytes a "
            f"sample): {need}, more than the {limit / 2**20:,.1f} MiB it may use; use fewer samples "
            "(--max-samples), a coarser --grid, or one method"
        )

    def gathered(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The kept maps of every process (``torch.distributed``), concatenated: per method
        (N, H', W'), and the (N,) classes."""
        maps = {m: torch.cat(parts) for m, parts in self.maps.items()}
        classes = torch.cat(self.classes) if self.classes else torch.zeros(0, dtype=torch.long)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (maps, classes))
            maps = {m: torch.cat([rank[0][m] for rank in gathered]) for m in maps}
            classes = torch.cat([rank[1] for rank in gathered])
        return maps, classes


def per_image_deviations(
    maps: torch.Tensor, classes: torch.Tensor, variant: str | Variant = DEFAULT_VARIANT
) -> torch.Tensor:
    """(N,) ``l(x, c)`` of each (N, H', W') map from the final class map of its class under
    ``variant`` (the variant's own class-map rule: the mean of the class's maps, or of its non-zero
    ones); NaN for a class with fewer than 2 maps (left out of L_CAM)."""
    rule = get_variant(variant)
    deviations = torch.full((len(maps),), math.nan, dtype=torch.float64)
    for c in classes.unique().tolist():
        members = classes == c
        if int(members.sum()) < 2:
            continue
        own = maps[members].double()
        averaged = rule.class_map_count(own.new_tensor(len(own)), is_zero_map(own).sum().double())
        deviations[members] = rule.deviation(own, own.sum(dim=0) / averaged.clamp(min=1))
    return deviations


@dataclass
class MethodComparison:
    """Each method's result, the per-image deviations (same images for every method) and the
    Spearman rank correlation of each pair of methods' deviations (None where undefined)."""

    results: dict[str, ConsistencyResult]
    deviations: dict[str, np.ndarray]
    rank_correlations: dict[tuple[str, str], float | None]

    @property
    def methods(self) -> list[str]:
        return list(self.results)

    def table(self) -> str:
        """One row per method: L_CAM (paper, robust), all-zero share, localisation where the data has
        masks; then the matrix of rank correlations."""
        localized = any(r.localization is not None for r in self.results.values())
        width = max(len(m) for m in self.results)
        head = f"{'method':<{width}}  {'L_CAM paper':>11}  {'L_CAM robust':>12}  {'all-zero':>8}"
        lines = [head + ("  energy PG  pointing" if localized else "")]
        for method, r in self.results.items():
            row = (
                f"{method:<{width}}  {fmt_metric(r.values.get('paper')):>11}  {fmt_metric(r.values.get('robust')):>12}"
                f"  {fmt_metric(r.zero_map_share, 3):>8}"
            )
            if localized and r.localization is not None:
                where = r.localization
                row += f"  {fmt_metric(where.energy_pointing_game):>9}  {fmt_metric(where.pointing_game):>8}"
            lines.append(row)
        n = len(next(iter(self.deviations.values()), []))
        lines.append(f"Spearman rank correlation of the per-image deviations ({n} images):")
        short = {m: m[:9] for m in self.results}
        lines.append(" " * width + "  " + "  ".join(f"{short[m]:>9}" for m in self.results))
        for a in self.results:
            cells = [1.0 if a == b else self.correlation(a, b) for b in self.results]
            lines.append(f"{a:<{width}}  " + "  ".join(f"{fmt_metric(v, 3):>9}" for v in cells))
        return "\n".join(lines)

    def correlation(self, a: str, b: str) -> float | None:
        return self.rank_correlations.get((a, b), self.rank_correlations.get((b, a)))

    def to_dict(self) -> dict[str, Any]:
        """``consistency.json``'s ``by_cam_method`` and ``cam_method_rank_correlation``."""
        return {
            "by_cam_method": {
                method: {key: value for key, value in r.to_dict().items() if key not in ("model", "dataset", "split")}
                for method, r in self.results.items()
            },
            "cam_method_rank_correlation": {f"{a}|{b}": rho for (a, b), rho in self.rank_correlations.items()},
            "cam_method_rank_correlation_images": len(next(iter(self.deviations.values()), [])),
        }


def compare_cam_methods(
    model: nn.Module | LoadedModel, data: Iterable[Any], methods: Sequence[str] | None = None, **options: Any
) -> MethodComparison:
    """Score ``model`` under each of ``methods`` (default: all) in one pass over ``data`` and
    correlate the methods' per-image deviations (under the ``variant`` option). ``options`` are
    :func:`~hf_gazecons.metric.gaze_consistency`'s keyword arguments; ``max_kept_bytes`` also bounds
    the kept maps (see the module docstring).

    Raises:
        MetricError: the kept maps would not fit in ``max_kept_bytes``; see also
            :func:`~hf_gazecons.metric.gaze_consistency`.
        UsageError: an unknown method.
    """
    from .batching import data_length

    methods = list(methods or cam_methods())
    for method in methods:
        get_cam_method(method)
    settings = scoring_options(**options)
    kept = KeptMaps(settings["grid"], settings["max_kept_bytes"], data_length(data))
    results = scoring_pass(model, data, methods, on_batch=kept, **options)
    maps, classes = kept.gathered()
    deviations = {
        m: per_image_deviations(maps[m], classes, settings["variant"]).numpy() for m in methods if m in maps
    }
    return MethodComparison(results, deviations, _rank_correlations(deviations))


def _rank_correlations(deviations: dict[str, np.ndarray]) -> dict[tuple[str, str], float | None]:
    """Spearman's rho of each pair over the images with a defined deviation; None when fewer than 3
    or when either side is constant (e.g. every map all zero)."""
    from scipy.stats import spearmanr

    names = list(deviations)
    correlations: dict[tuple[str, str], float | None] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = deviations[a], deviations[b]
            defined = ~(np.isnan(x) | np.isnan(y))
            if defined.sum() < 3 or np.ptp(x[defined]) == 0 or np.ptp(y[defined]) == 0:
                correlations[(a, b)] = None
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rho = float(spearmanr(x[defined], y[defined]).statistic)
            correlations[(a, b)] = rho if math.isfinite(rho) else None
    return correlations
