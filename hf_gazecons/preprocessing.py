"""How images become ``pixel_values`` for one model: timm data config or a transformers processor.

Evaluation resizes the whole image to the model's input size (no crop, so masks and maps keep
the image's geometry, as the study does); training adds the study's augmentation
(RandomResizedCrop scale 0.9-1.0, horizontal flip). The flip is drawn last, as timm draws it, and
:meth:`Preprocessing.augment` reports it, so that training can compare a mirrored image's map
with the mirrored class map.

Example::

    >>> prep = timm_preprocessing(timm.create_model("resnet18"), image_size=128)
    >>> prep(PIL.Image.open("cat.png")).shape
    torch.Size([3, 128, 128])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import timm.data
import torch
from PIL import Image
from torch import nn

__all__ = ["Preprocessing", "timm_preprocessing", "processor_preprocessing", "plain_preprocessing", "STUDY_MEAN_STD"]

Transform = Callable[[Image.Image], torch.Tensor]

STUDY_MEAN_STD = ((0.5,), (0.5,))
"""The thesis's normalisation for its 1-channel images."""


@dataclass
class Preprocessing:
    """Image -> tensor for one model. ``mode`` is the PIL mode the model reads ("RGB" or "L").

    ``hflip`` is the probability of the training augmentation's horizontal flip, drawn after
    ``train_transform`` (which then does not flip); None where the training transform is a
    processor's own, whose flips are not known."""

    mode: str
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eval_transform: Transform
    train_transform: Transform
    data_config: dict[str, Any] = field(default_factory=dict)
    processor: Any = None
    hflip: float | None = None

    @property
    def num_channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def __call__(self, image: Image.Image, train: bool = False) -> torch.Tensor:
        return self.augment(image)[0] if train else self.eval_transform(image.convert(self.mode))

    def augment(self, image: Image.Image) -> tuple[torch.Tensor, bool | None]:
        """The training tensor of ``image`` and whether it was mirrored horizontally (None: unknown)."""
        pixel_values = self.train_transform(image.convert(self.mode))
        if not self.hflip:
            return pixel_values, None if self.hflip is None else False
        flipped = bool(torch.rand(1) < self.hflip)  # torchvision's RandomHorizontalFlip draw, in its place
        return (pixel_values.flip(-1) if flipped else pixel_values), flipped


def first_conv_channels(model: nn.Module) -> int:
    """Input channels of a timm model, read from its first convolution."""
    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    module = dict(model.named_modules()).get(first_conv) if isinstance(first_conv, str) else None
    return getattr(module, "in_channels", 3)


def timm_preprocessing(
    model: nn.Module,
    image_size: int | None = None,
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> Preprocessing:
    """Preprocessing from a timm model's data config, optionally at another square ``image_size``."""
    config = timm.data.resolve_model_data_config(model)
    channels = first_conv_channels(model)
    height, width = (image_size, image_size) if image_size else config["input_size"][1:]
    mean, std = mean_std or (tuple(config["mean"]), tuple(config["std"]))
    if len(mean) != channels:
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return _resize_preprocessing(channels, (height, width), config["interpolation"], mean, std)


def plain_preprocessing(image_size: int, channels: int = 3) -> Preprocessing:
    """Resize + [0, 1] + normalise with mean/std 0.5, for models that come without a processor."""
    return _resize_preprocessing(channels, (image_size, image_size), "bilinear", (0.5,) * channels, (0.5,) * channels)


def _resize_preprocessing(
    channels: int, size: tuple[int, int], interpolation: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> Preprocessing:
    common = dict(input_size=(channels, *size), interpolation=interpolation, mean=mean, std=std)
    return Preprocessing(
        mode="L" if channels == 1 else "RGB",
        image_size=size,
        mean=mean,
        std=std,
        eval_transform=timm.data.create_transform(**common, is_training=False, crop_pct=1.0, crop_mode="squash"),
        train_transform=timm.data.create_transform(
            **common, is_training=True, scale=(0.9, 1.0), hflip=0.0, color_jitter=None
        ),
        data_config={**common, "crop_pct": 1.0, "crop_mode": "squash"},
        hflip=0.5,
    )


def processor_preprocessing(processor: Any) -> Preprocessing:
    """Preprocessing from a transformers image processor (its own resize and normalisation)."""
    size = processor.size
    if "height" in size:
        image_size = (size["height"], size["width"])
    else:
        edge = size.get("shortest_edge") or size.get("longest_edge")
        image_size = (edge, edge)

    def transform(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    train = getattr(processor, "train_transforms", None) or transform
    mean = tuple(getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5))
    std = tuple(getattr(processor, "image_std", None) or (0.5, 0.5, 0.5))
    return Preprocessing("RGB", image_size, mean, std, transform, train, processor=processor)
