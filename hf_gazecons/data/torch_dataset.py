"""A torch Dataset over a standardised :class:`datasets.Dataset` (see :mod:`.loading`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from datasets import Image
from PIL import Image as PILImage

from ..errors import DataError

__all__ = ["ImageClassificationDataset"]

_MODES = ("RGB", "L")


class ImageClassificationDataset(torch.utils.data.Dataset):
    """Rows of a data set with ``image``/``label`` (and optional ``mask``) columns as tensors.

    Item ``i`` is ``{"pixel_values": (C, H, W) tensor, "labels": int}`` plus
    ``"masks"``: a (H, W) bool tensor at the size of ``pixel_values`` (nearest-neighbour resize;
    the transform must be a plain resize, no crop) when the data set has a ``mask`` column.
    Items collate with :func:`torch.utils.data.default_collate` (a plain DataLoader works).

    >>> from torchvision import transforms
    >>> ds = load_image_dataset("builtin:shapes?size=64", "validation")
    >>> tds = ImageClassificationDataset(ds, transforms.ToTensor())
    >>> tds[0]["pixel_values"].shape, tds[0]["masks"].shape
    (torch.Size([3, 64, 64]), torch.Size([64, 64]))
    """

    def __init__(
        self,
        dataset,
        transform: Callable[[PILImage.Image], torch.Tensor],
        mode: str = "RGB",
    ) -> None:
        missing = [c for c in ("image", "label") if c not in dataset.column_names]
        if missing:
            raise DataError(
                f"data set lacks the column(s) {missing}; columns: {dataset.column_names}; "
                "load it with load_image_dataset to standardise the columns"
            )
        if mode not in _MODES:
            raise DataError(f"image mode must be one of {list(_MODES)}, got {mode!r}")
        self.dataset = dataset
        self.transform = transform
        self.mode = mode
        self.has_masks = "mask" in dataset.column_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        image, label, mask = self._read(i)
        pixel_values = self.transform(image)
        item = {"pixel_values": pixel_values, "labels": int(label)}
        if self.has_masks:
            item["masks"] = _mask_tensor(mask, tuple(pixel_values.shape[-2:]))
        return item

    def _read(self, i: int):
        """Decode row ``i``: (image in ``self.mode``, label, mask or None)."""
        try:
            row = self.dataset[i]
            image = row["image"].convert(self.mode)
            mask = row["mask"] if self.has_masks else None
            mask = mask.convert("L") if mask is not None else None
        except (OSError, PILImage.DecompressionBombError) as exc:  # UnidentifiedImageError too
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"image {i} of {self._where(i, reason)} cannot be read: {reason}") from exc
        if self.has_masks and mask is None:
            raise DataError(f"image {i} of the data set has no mask (the mask column is empty there)")
        return image, row["label"], mask

    def _where(self, i: int, reason: str) -> str:
        """``the validation split (/data/cat/7.png)``: the split and the file of row ``i``, where known
        (the file only if ``reason`` does not already name it)."""
        split = getattr(self.dataset, "split", None)
        where = f"the {split} split" if split else "the data set"
        try:
            raw = self.dataset.select([i]).cast_column("image", Image(decode=False))[0]["image"]
        except (AttributeError, OSError, TypeError, ValueError):  # the file name is a courtesy, never the error
            return where
        path = raw.get("path") if isinstance(raw, dict) else None
        return f"{where} ({path})" if path and path not in reason else where

    @property
    def label_names(self) -> list[str]:
        """Class names (from the ``label`` ClassLabel feature), in label order."""
        feature = self.dataset.features["label"]
        return list(getattr(feature, "names", None) or [])


def _mask_tensor(mask: PILImage.Image, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool tensor of a mode-"L" mask (nonzero = object), resized NEAREST to ``size``."""
    height, width = size
    if mask.size != (width, height):
        mask = mask.resize((width, height), PILImage.NEAREST)
    return torch.from_numpy(np.asarray(mask) > 0)
