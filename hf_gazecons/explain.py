"""CAM maps of individual images, for pictures: maps with the predicted label and its probability.

>>> shown = explain(load_model("hf-hub:org/name"), [Image.open("x.png")])
>>> plot_overlays(shown.images, shown.maps, shown.titles(), "overlays.png")
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import datasets
import torch
from PIL import Image

from .batching import eval_mode
from .cam import CAM
from .cam_family import DEFAULT_CAM_METHOD
from .data.torch_dataset import decode_image
from .models import LoadedModel

__all__ = ["Explanation", "explain", "example_images", "examples_per_class"]


@dataclass
class Explanation:
    """Maps (N, H', W') of the predicted classes, with the predictions and their probabilities."""

    images: list[Image.Image]
    maps: torch.Tensor
    predictions: list[str]
    probabilities: list[float]
    true_labels: list[str] | None = None

    def titles(self) -> list[str]:
        titles = [f"pred {p} ({s:.2f})" for p, s in zip(self.predictions, self.probabilities)]
        if self.true_labels is None:
            return titles
        return [f"true {t} / {title}" for t, title in zip(self.true_labels, titles)]


def explain(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    target: str | int | None = None,
    true_labels: list[str] | None = None,
    cam_method: str = DEFAULT_CAM_METHOD,
) -> Explanation:
    """One CAM forward (``cam_method``, default Grad-CAM) over ``images`` with ``loaded``'s own preprocessing."""
    pixel_values = torch.stack([loaded.preprocessing(image) for image in images])
    device = next(loaded.model.parameters()).device
    with eval_mode(loaded.model):
        out = CAM(loaded.model, target, cam_method)(pixel_values.to(device))
    probabilities, predictions = out.logits.softmax(dim=1).max(dim=1)
    return Explanation(
        images=list(images),
        maps=out.maps.cpu(),
        predictions=[loaded.label_names[i] for i in predictions.tolist()],
        probabilities=probabilities.tolist(),
        true_labels=true_labels,
    )


def example_images(
    dataset: datasets.Dataset | datasets.IterableDataset, per_class: int = 2, classes: Iterable[int] | None = None
) -> tuple[list[Image.Image], list[int]]:
    """The first ``per_class`` images of each class (of ``classes``, default all), in class order,
    with their labels. A stream is read only until they are found (at most once through)."""
    wanted = set(range(dataset.features["label"].num_classes) if classes is None else classes)
    if isinstance(dataset, datasets.Dataset):
        rows = dataset.select(examples_per_class(dataset, per_class))
        kept = [i for i, label in enumerate(rows["label"]) if label in wanted]
        return [rows[i]["image"] for i in kept], [rows[i]["label"] for i in kept]
    chosen: dict[int, list[Image.Image]] = {}
    for row in dataset.cast_column("image", datasets.Image(decode=False)):
        if wanted and row["label"] in wanted and len(chosen.setdefault(row["label"], [])) < per_class:
            chosen[row["label"]].append(decode_image(row["image"]))
            if len(chosen[row["label"]]) == per_class:
                wanted.discard(row["label"])
        if not wanted:
            break
    order = sorted(chosen)
    return [image for c in order for image in chosen[c]], [c for c in order for _ in chosen[c]]


def examples_per_class(dataset: datasets.Dataset, per_class: int = 2) -> list[int]:
    """Indices of the first ``per_class`` samples of each class, in class order."""
    labels = dataset["label"]
    chosen: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        if len(chosen.setdefault(label, [])) < per_class:
            chosen[label].append(index)
    return [i for label in sorted(chosen) for i in chosen[label]]
