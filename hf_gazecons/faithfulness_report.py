"""Faithfulness of a model's Grad-CAM over a data set, each figure beside its references.

For every image, the CAM map (Grad-CAM unless another method is asked for) of the predicted class (at the target layer's own grid) is scored
by deletion/insertion and ROAD (:mod:`~hf_gazecons.faithfulness`), and so are two references of the
same grid for the same image and class: a **random** map (uniform noise per cell, seeded) and, where
the data has a mask, the **perfect** map (the mask averaged onto the grid). A Grad-CAM figure means
something only beside them: at the random map's level the map ranks pixels no better than chance.
Means come with a 95 % Student's t interval over images (cut to the metric's range); docs/METHOD.md,
section 11, has the definitions.

    >>> report = evaluate_faithfulness(load_model("out/run"), load_image_dataset("builtin:shapes", "test"))
    >>> report.summary()["gradcam"]["deletion_auc"]["mean"]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import batch_source, eval_mode, unpack_batch
from .cam import CAM
from .cam_family import DEFAULT_CAM_METHOD
from .faithfulness import ROAD_PERCENTILES, deletion_insertion, road
from .localization import perfect_maps
from .models import LoadedModel
from .preprocessing import Preprocessing
from .stats import mean_interval

__all__ = ["FAITHFULNESS_METRICS", "MAPS", "FaithfulnessResult", "FaithfulnessSettings", "evaluate_faithfulness"]

FAITHFULNESS_METRICS = {
    "deletion_auc": ("deletion", (0.0, 1.0), "lower is more faithful"),
    "insertion_auc": ("deletion", (0.0, 1.0), "higher is more faithful"),
    "road_morf": ("road", (-1.0, 1.0), "lower (more negative) is more faithful"),
    "road_lerf": ("road", (-1.0, 1.0), "higher (nearer 0) is more faithful"),
}
"""metric -> (the test that gives it, the range of its per-image values, how to read it)."""

MAPS = ("gradcam", "random", "perfect")
"""The maps scored per image: the model's Grad-CAM and its two references."""


@dataclass(frozen=True)
class FaithfulnessSettings:
    """What to compute: ``tests`` among ``deletion`` (deletion and insertion) and ``road``; their
    settings (torchcam's and pytorch-grad-cam's defaults, except ROAD's noise: 0 makes it
    deterministic); ``seed`` of the random maps (and of ROAD's noise)."""

    tests: tuple[str, ...] = ("deletion", "road")
    steps: int = 20
    baseline: float = 0.0
    percentiles: tuple[float, ...] = ROAD_PERCENTILES
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.tests) - {"deletion", "road"}
        if unknown or not self.tests:
            raise ValueError(f"faithfulness tests are 'deletion' and 'road', got {list(self.tests)}")

    @property
    def metrics(self) -> list[str]:
        return [name for name, (test, _, _) in FAITHFULNESS_METRICS.items() if test in self.tests]


@dataclass
class FaithfulnessResult:
    """Per image (``images``: its index in the data, label, prediction, and each map's values) and
    summarised (:meth:`summary`); ``road_curves`` holds the mean MoRF and LeRF change per percentile."""

    settings: FaithfulnessSettings
    images: list[dict[str, Any]] = field(default_factory=list)
    road_curves: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)

    def values(self, map_name: str, metric: str) -> list[float | None]:
        return [image[map_name][metric] for image in self.images if image.get(map_name) is not None]

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """map -> metric -> mean, 95 % interval, n (images with a value) and n_undefined (maps
        without a ranking: an all-zero or constant map)."""
        table: dict[str, dict[str, dict[str, Any]]] = {}
        for map_name in MAPS:
            table[map_name] = {}
            for metric in self.settings.metrics:
                values = self.values(map_name, metric)
                present = [v for v in values if v is not None]
                bounds = FAITHFULNESS_METRICS[metric][1]
                interval = mean_interval(present, bounds=bounds)
                table[map_name][metric] = {
                    "mean": sum(present) / len(present) if present else None,
                    "interval": list(interval) if interval else None,
                    "n": len(present),
                    "n_undefined": len(values) - len(present),
                }
        return table

    def per_image_columns(self) -> dict[str, tuple[list[float | None], str]]:
        """The per-image table's faithfulness columns: metric -> (the value of the model's map for each
        image in the order scored, None where it has none; how to read it)."""
        return {
            metric: ([image["gradcam"][metric] if image.get("gradcam") else None for image in self.images],
                     f"{metric} of the image's map ({FAITHFULNESS_METRICS[metric][2]}; empty: a map without a ranking)")
            for metric in self.settings.metrics
        }  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "reading": {metric: FAITHFULNESS_METRICS[metric][2] for metric in self.settings.metrics},
            "summary": self.summary(),
            "road_curves": self.road_curves,
            "per_image": self.images,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _scores(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    settings: FaithfulnessSettings,
    generator: torch.Generator,
    batch_size: int,
) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    """metric -> (B,) values of one kind of map, and the (B, P) ROAD curves."""
    values: dict[str, torch.Tensor] = {}
    curves = None
    if "deletion" in settings.tests:
        values["deletion_auc"], values["insertion_auc"] = deletion_insertion(
            model, pixel_values, maps, classes, settings.steps, settings.baseline, batch_size=batch_size
        )
    if "road" in settings.tests:
        morf, lerf = road(
            model, pixel_values, maps, classes, settings.percentiles, settings.noise,
            generator=generator, batch_size=batch_size,
        )  # fmt: skip
        values["road_morf"], values["road_lerf"] = morf.mean(dim=1), lerf.mean(dim=1)
        curves = (morf, lerf)
    return values, curves


def evaluate_faithfulness(
    model: nn.Module | LoadedModel,
    data: Iterable[Any],
    settings: FaithfulnessSettings = FaithfulnessSettings(),
    *,
    preprocessing: Preprocessing | None = None,
    target: str | int | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    cam_method: str = DEFAULT_CAM_METHOD,
) -> FaithfulnessResult:
    """Score the faithfulness of ``model``'s Grad-CAM (predicted class) on ``data`` beside a random
    and a perfect map (see the module).

    Args:
        model: a :class:`LoadedModel` (brings its preprocessing) or a classifier module.
        data: batches, or a ``datasets`` data set with ``preprocessing`` (as
            :func:`~hf_gazecons.metric.gaze_consistency` takes them).
        settings: which tests and their settings.
        target: Grad-CAM target layer (None: automatic).
        batch_size: images per Grad-CAM forward; the perturbed images go through the model 64 at a time.
        cam_method: the CAM method whose maps are scored (``gradcam`` by default; the key stays ``gradcam``).

    Returns:
        :class:`FaithfulnessResult`.
    """
    if isinstance(model, LoadedModel):
        preprocessing = preprocessing or model.preprocessing
        model = model.model
    cam = CAM(model, target=target, method=cam_method, masked_batch_size=batch_size)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(settings.seed)
    result = FaithfulnessResult(settings)
    curves: dict[str, list[torch.Tensor]] = {f"{m}_{c}": [] for m in MAPS for c in ("morf", "lerf")}
    offset = 0
    batches = batch_source(data, preprocessing, batch_size, num_workers)
    with eval_mode(model):
        for batch in tqdm(batches, desc="faithfulness", unit="batch", disable=None if progress else True):
            pixel_values, labels, masks = unpack_batch(batch)
            pixel_values = pixel_values.to(device)
            out = cam(pixel_values)
            predictions = out.logits.argmax(dim=1)
            grid = tuple(out.maps.shape[-2:])
            maps = {"gradcam": out.maps.detach(), "random": torch.rand(len(pixel_values), *grid, generator=generator)}
            has_mask = masks.flatten(1).any(dim=1) if masks is not None else torch.zeros(len(labels), dtype=torch.bool)
            scored: dict[str, dict[str, torch.Tensor]] = {}
            for name in MAPS:
                index = has_mask.nonzero()[:, 0] if name == "perfect" else torch.arange(len(labels))
                if len(index) == 0:
                    continue
                chosen = perfect_maps(masks[index], grid) if name == "perfect" else maps[name][index]
                values, road_curves = _scores(
                    model, pixel_values[index], chosen.to(device), predictions[index], settings, generator, 64
                )
                scored[name] = {"index": index, **values}
                if road_curves is not None:
                    curves[f"{name}_morf"].append(road_curves[0].cpu())
                    curves[f"{name}_lerf"].append(road_curves[1].cpu())
            for i in range(len(labels)):
                row: dict[str, Any] = {
                    "index": offset + i, "label": int(labels[i]), "prediction": int(predictions[i]),
                    "correct": bool(labels[i] == predictions[i].cpu()),
                }  # fmt: skip
                for name in MAPS:
                    where = (scored[name]["index"] == i).nonzero() if name in scored else torch.zeros(0, 1)
                    row[name] = None if len(where) == 0 else {
                        metric: _finite(float(scored[name][metric][where[0, 0]])) for metric in settings.metrics
                    }  # fmt: skip
                result.images.append(row)
            offset += len(labels)
    if "road" in settings.tests:
        result.road_curves = {
            name: {str(p): _finite(float(v)) for p, v in zip(settings.percentiles, torch.cat(parts).nanmean(dim=0))}
            for name, parts in curves.items()
            if parts
        }
    return result
