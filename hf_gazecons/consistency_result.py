"""What a gaze-consistency evaluation found (:func:`~hf_gazecons.metric.gaze_consistency`):
L_CAM overall and per class, under each variant computed, beside accuracy, kappa, the all-zero
map count and localisation; ``consistency.json`` (``to_dict``) and the Trainer's flat metrics
(``to_metrics``) are its two spellings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .cam_family import DEFAULT_CAM_METHOD
from .localization import Localization
from .run_record import CONSISTENCY, class_metric, metric_key, reference_metric, variant_metric
from .variants import DEFAULT_VARIANT

__all__ = ["ClassConsistency", "ConsistencyResult", "Localization"]


@dataclass
class ClassConsistency:
    """One class: its mean deviation (None below 2 correct samples) and its counts.

    ``n_zero_maps`` counts correct samples whose map is zero everywhere: such a collapsed gaze
    scores as perfectly consistent under the paper and reference variants (docs/METHOD.md, section 8), so a
    large count makes ``value`` suspect. ``values`` holds the class's value under every variant
    that was computed (``value`` is the one asked for).
    """

    value: float | None
    n_correct: int
    n_samples: int
    n_zero_maps: int = 0
    values: dict[str, float | None] = field(default_factory=dict)


@dataclass
class ConsistencyResult:
    """L_CAM (``value``; lower = more consistent) beside accuracy, kappa and the mean cross-entropy
    ``loss``, per class and overall. ``values`` holds L_CAM under every variant that one pass could
    compute: always ``paper``, ``pearson`` and ``robust`` (they need only sums), ``reference`` when
    asked for. ``cam_method`` is the saliency method of the maps (:func:`~hf_gazecons.cam_family.cam_methods`)."""

    value: float | None
    per_class: dict[str, ClassConsistency]
    accuracy: float
    kappa: float
    loss: float
    n_samples: int
    n_correct: int
    n_zero_maps: int
    cam_size: tuple[int, int]
    class_means: torch.Tensor
    target_name: str
    variant: str
    grid: tuple[int, int] | None = None
    localization: Localization | None = None
    model: str | None = None
    dataset: str | None = None
    split: str | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    cam_method: str = DEFAULT_CAM_METHOD

    @property
    def zero_map_share(self) -> float | None:
        """All-zero maps among the correct samples (None without correct samples)."""
        return self.n_zero_maps / self.n_correct if self.n_correct else None

    def to_metrics(self, prefix: str = "eval") -> dict[str, float | None]:
        """Flat ``{prefix}_<name>`` metrics (the names of :mod:`~hf_gazecons.run_record`), as the Trainer
        logs them: ``gaze_consistency`` is the paper variant (per class too, as
        ``gaze_consistency_<class>``), the other variants computed beside it come as
        ``<variant>_gaze_consistency``; localisation only where the data has masks: both games (over
        non-zero maps), their ``chance_`` and ``perfect_`` values, the pointing game's tolerance, the
        all-zero maps' share and each class's games with their references
        (``energy_pointing_game_<class>``, ``pointing_game_<class>``, and the ``chance_`` and
        ``perfect_`` values of each)."""
        values: dict[str, float | None] = {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            CONSISTENCY: self.values[DEFAULT_VARIANT],
            "zero_map_share": self.zero_map_share,
        }
        values.update({variant_metric(v): value for v, value in self.values.items() if v != DEFAULT_VARIANT})
        values.update({class_metric(name): c.values[DEFAULT_VARIANT] for name, c in self.per_class.items()})
        if self.localization is not None:
            located = self.localization
            values.update(pointing_game_tolerance=located.tolerance, localization_zero_map_share=located.zero_map_share)
            for game in ("energy_pointing_game", "pointing_game"):
                values[game] = getattr(located, game)
                for reference in ("chance", "perfect"):
                    values[reference_metric(reference, game)] = getattr(located, f"{game}_{reference}")
                for name, scores in located.per_class.items():
                    values[class_metric(name, game)] = getattr(scores, game)
                    for reference in ("chance", "perfect"):
                        values[class_metric(name, reference_metric(reference, game))] = getattr(
                            scores, f"{game}_{reference}"
                        )
        return {metric_key(prefix, name): value for name, value in values.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``hf-gazecons score`` (``consistency.json``)."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "variant": self.variant,
            "cam_method": self.cam_method,
            "grid": list(self.grid) if self.grid else None,
            "target_layer": self.target_name,
            "cam_size": list(self.cam_size),
            "n_samples": self.n_samples,
            "n_correct": self.n_correct,
            "accuracy": self.accuracy,
            "kappa": _finite_or_none(self.kappa),
            "gaze_consistency": self.value,
            "gaze_consistency_by_variant": dict(self.values),
            "n_zero_maps": self.n_zero_maps,
            "zero_map_share": self.zero_map_share,
            "per_class": {
                name: {
                    "gaze_consistency": c.value,
                    "n_correct": c.n_correct,
                    "n_samples": c.n_samples,
                    "n_zero_maps": c.n_zero_maps,
                }
                for name, c in self.per_class.items()
            },
            "localization": None if self.localization is None else self.localization.to_dict(),
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
