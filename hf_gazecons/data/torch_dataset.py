"""Torch datasets over standardised :mod:`datasets` data (see :mod:`.loading`): map-style and streamed.

Two things keep the loader from being the bottleneck of a training or scoring run:

* ``decode_size``: a JPEG is decoded straight at a reduced scale (PIL ``draft``: 1/2, 1/4 or 1/8,
  whichever still leaves every side at least the requested size), so a 2000 px X-ray bound for a
  224 px input costs the decode of a 250 px one. Other formats decode in full.
* The transform of an item runs with one torch thread when it runs in the main process
  (``num_workers=0``): per-image tensor operations are far too small to gain from the intra-op
  thread pool, and waking it for each of them cost 60 ms per image on a busy 2-core machine
  (1.5 ms with one thread). Worker processes already run with one thread.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import datasets
import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps

from ..errors import DataError, UnreadableImageError, first_line

if TYPE_CHECKING:
    from ..preprocessing import Preprocessing

__all__ = ["ImageClassificationDataset", "IterableImageClassificationDataset", "decode_image"]

_MODES = ("RGB", "L")


class _Rows:
    """What both torch datasets share: checking the columns, decoding a row, building the item."""

    def __init__(
        self,
        dataset,
        transform: Callable[[PILImage.Image], torch.Tensor],
        mode: str = "RGB",
        decode_size: tuple[int, int] | None = None,
        reports_flips: bool = False,
    ) -> None:
        missing = [c for c in ("image", "label") if c not in (dataset.column_names or [])]
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
        self.decode_size = tuple(decode_size) if decode_size else None
        self.reports_flips = reports_flips
        self.has_masks = "mask" in dataset.column_names
        # rows hold the encoded images ({"bytes", "path"}); decode_image reads them, inside _read's error handling
        self._rows = dataset.cast_column("image", datasets.Image(decode=False))
        if self.has_masks:
            self._rows = self._rows.cast_column("mask", datasets.Image(mode="L", decode=False))

    @classmethod
    def with_preprocessing(cls, dataset, preprocessing: Preprocessing, train: bool = False, report_flips: bool = False):
        """Items as ``preprocessing`` makes them for its model (``train``: with its augmentation; with
        ``report_flips`` too, ``"flipped"`` where the preprocessing reports its horizontal flip, for
        ``--follow_flips``: a model's own ``forward`` would not take that key), read in its mode with
        JPEGs decoded near its input size. The images are the same with or without the flags."""
        flips = train and report_flips and preprocessing.hflip is not None
        transform = preprocessing.augment if flips else partial(preprocessing, train=True) if train else preprocessing
        return cls(dataset, transform, preprocessing.mode, preprocessing.image_size, reports_flips=flips)

    @property
    def label_names(self) -> list[str]:
        """Class names (from the ``label`` ClassLabel feature), in label order."""
        feature = self.dataset.features["label"]
        return list(getattr(feature, "names", None) or [])

    def _item(self, row: dict, where: str) -> dict:
        image, label, mask = self._read(row, where)
        with _one_thread():
            pixel_values = self.transform(image)
        flipped = None
        if self.reports_flips:  # the transform returns (tensor, mirrored horizontally)
            pixel_values, flipped = pixel_values
        item = {"pixel_values": pixel_values, "labels": int(label)}
        if self.reports_flips:
            item["flipped"] = flipped
        if self.has_masks:
            item["masks"] = _mask_tensor(mask, tuple(pixel_values.shape[-2:]))
        return item

    def _read(self, row: dict, where: str):
        """Decode one row: (image in ``self.mode``, label, mask or None); an UnreadableImageError that
        names the row (``where``) and its file where it cannot be."""
        encoded = row["image"]
        path = encoded.get("path") if isinstance(encoded, dict) else None
        if encoded is None:
            reason = "no image (the image column is empty there)"
            raise UnreadableImageError(f"{where} has {reason}", path, reason)
        image = _decoded(encoded, self.decode_size, self.mode, where, path, "")
        mask = row["mask"] if self.has_masks else None
        if self.has_masks and mask is None:
            reason = "no mask (the mask column is empty there)"
            raise UnreadableImageError(f"{where} has {reason}", path, reason)
        mask = _decoded(mask, None, "L", where, path, "its mask: ") if mask is not None else None
        return image, row["label"], mask


class ImageClassificationDataset(_Rows, torch.utils.data.Dataset):
    """Rows of a data set with ``image``/``label`` (and optional ``mask``) columns as tensors.

    Item ``i`` is ``{"pixel_values": (C, H, W) tensor, "labels": int}`` plus
    ``"masks"``: a (H, W) bool tensor at the size of ``pixel_values`` (nearest-neighbour resize;
    the transform must be a plain resize, no crop) when the data set has a ``mask`` column, and
    ``"flipped"`` (bool) with ``reports_flips``, whose transform returns ``(tensor, flipped)``.
    Items collate with :func:`torch.utils.data.default_collate` (a plain DataLoader works).
    ``decode_size=(H, W)``: decode JPEGs at a reduced scale no smaller than that (module docstring).

    >>> from torchvision import transforms
    >>> ds = load_image_dataset("builtin:shapes?size=64", "validation")
    >>> tds = ImageClassificationDataset(ds, transforms.ToTensor())
    >>> tds[0]["pixel_values"].shape, tds[0]["masks"].shape
    (torch.Size([3, 64, 64]), torch.Size([64, 64]))
    """

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        return self._item(self._rows[i], self._where(i))

    def check(self, i: int) -> None:
        """Decode row ``i`` as ``self[i]`` does, without the transform: raise :class:`UnreadableImageError`
        where it cannot be decoded (the check of ``--skip-bad-images``, :mod:`.bad_images`)."""
        self._read(self._rows[int(i)], self._where(int(i)))

    def _where(self, i: int) -> str:
        split = getattr(self.dataset, "split", None)
        return f"image {i} of {f'the {split} split' if split else 'the data set'}"


class IterableImageClassificationDataset(_Rows, torch.utils.data.IterableDataset):
    """The items of :class:`ImageClassificationDataset` from a streamed :class:`datasets.IterableDataset`.

    Holds nothing but the stream: memory does not depend on the data set's length. Under a
    DataLoader with workers, each worker reads its own shards of the stream (``datasets`` splits
    them; a stream of fewer shards than workers leaves the extra workers idle).
    """

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        stream = "the stream" if worker is None else f"worker {worker.id}'s part of the stream"
        for index, row in enumerate(self._rows):
            yield self._item(row, f"image {index} of {stream}")


def decode_image(value: dict | PILImage.Image, size: tuple[int, int] | None = None) -> PILImage.Image:
    """An encoded ``datasets.Image`` value (``{"bytes", "path"}``) as a loaded PIL image, a JPEG
    decoded at the smallest DCT scale whose sides are all at least ``max(size)``; EXIF orientation
    applied as ``datasets`` does. A path that is not a local file is read by ``datasets``."""
    if isinstance(value, PILImage.Image):
        return value
    data, path = value.get("bytes"), value.get("path")
    if data is not None:
        image = PILImage.open(io.BytesIO(data))
    elif path is not None and os.path.isfile(path):
        image = PILImage.open(path)
    else:  # a remote file (streaming from the Hub): datasets' reader, in full
        return datasets.Image().decode_example(value)
    if size:
        side = max(size)
        image.draft(None, (side, side))  # JPEG only; a no-op for other formats
    image.load()  # reads the pixels and closes the file
    if image.getexif().get(PILImage.ExifTags.Base.Orientation) is not None:
        image = ImageOps.exif_transpose(image)
    return image


_BYTES_OBJECT = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")  # PIL names an in-memory file so


def _decoded(
    value: dict | PILImage.Image, size: tuple[int, int] | None, mode: str, where: str, path: str | None, what: str
) -> PILImage.Image:
    """:func:`decode_image` in ``mode``; a failure becomes an UnreadableImageError naming ``where`` and
    ``path`` (unless the decoder's reason names it), its reason prefixed by ``what``."""
    try:
        return decode_image(value, size).convert(mode)
    except (OSError, PILImage.DecompressionBombError) as exc:  # UnidentifiedImageError too
        reason = what + _BYTES_OBJECT.sub("the stored bytes", first_line(exc))
        named = f"{where} ({path})" if path and path not in reason else where  # the file, unless reason names it
        raise UnreadableImageError(f"{named} cannot be read: {reason}", path, reason) from exc


@contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread for a per-image transform in the main process (see the module docstring)."""
    threads = torch.get_num_threads()
    if threads == 1 or torch.utils.data.get_worker_info() is not None:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _mask_tensor(mask: PILImage.Image, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool tensor of a mode-"L" mask (nonzero = object), resized NEAREST to ``size``."""
    height, width = size
    if mask.size != (width, height):
        mask = mask.resize((width, height), PILImage.NEAREST)
    return torch.from_numpy(np.asarray(mask) > 0)
