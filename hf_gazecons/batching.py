"""Batch plumbing shared by scoring, the sanity check and the explanations: how a data set
becomes batches of ``(pixel_values, labels, masks)`` for this process, and a model's eval mode
that restores each submodule's own mode afterwards."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import DataError, MetricError
from .preprocessing import Preprocessing

__all__ = ["batch_source", "check_labels", "data_length", "eval_mode", "unpack_batch"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def batch_source(
    data: Iterable[Any],
    preprocessing: Preprocessing | None,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
) -> Iterable[Any]:
    """``data`` itself, or a DataLoader over a ``datasets.Dataset`` or streamed
    ``datasets.IterableDataset`` (this process's part of it)."""
    import datasets

    if not isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
        return data
    if preprocessing is None:
        raise MetricError(f"a datasets.{type(data).__name__} needs preprocessing=... (or pass a LoadedModel)")
    from torch.utils.data import DataLoader

    from .data import ImageClassificationDataset, IterableImageClassificationDataset

    distributed = dist.is_available() and dist.is_initialized()
    if isinstance(data, datasets.IterableDataset):
        if distributed:
            from datasets.distributed import split_dataset_by_node

            data = split_dataset_by_node(data, rank=dist.get_rank(), world_size=dist.get_world_size())
        items = IterableImageClassificationDataset.with_preprocessing(data, preprocessing)
    else:
        if len(data) == 0:
            raise DataError("the data set is empty")
        if distributed:
            data = data.shard(num_shards=dist.get_world_size(), index=dist.get_rank(), contiguous=True)
        items = ImageClassificationDataset.with_preprocessing(data, preprocessing)
    return DataLoader(items, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)


def unpack_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(pixel_values, labels, masks or None)`` of a dict batch or a ``(pixel_values, labels)`` pair."""
    if isinstance(batch, Mapping):
        return batch["pixel_values"], torch.as_tensor(batch["labels"]), batch.get("masks")
    pixel_values, labels = batch[0], batch[1]
    return pixel_values, torch.as_tensor(labels), None


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Raise a :class:`DataError` naming the first label outside ``0..num_classes - 1``."""
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DataError(f"label {int(bad[0])} is outside the model's {num_classes} classes (0..{num_classes - 1})")


def data_length(data: Any) -> int | None:
    """The number of samples in ``data`` when it is known before reading it (a ``datasets.Dataset``
    or a DataLoader over a sized map-style dataset), else None."""
    import datasets
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
        data = data.dataset
    elif not isinstance(data, datasets.Dataset):
        return None
    try:
        return len(data)
    except TypeError:
        return None
