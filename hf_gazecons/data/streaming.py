"""Streamed data sets: rows read as they are needed, so that scoring takes memory independent of length.

:func:`load_streaming_dataset` is :func:`~hf_gazecons.data.load_image_dataset` for a
:class:`datasets.IterableDataset`: a Hub data set id or an image folder is passed to
``datasets.load_dataset(..., streaming=True)``; a ``save_to_disk`` folder (memory-mapped already)
and the built-in sets (generated in memory) are wrapped with ``to_iterable_dataset()``. The
columns are standardised the same way (``image``, ``label``, optional ``mask``); a stream's labels
must be a ``ClassLabel``, since the class names of plain integer or string labels are only known
after reading every row.
"""

from __future__ import annotations

import os

import datasets
from datasets import ClassLabel, IterableDataset, IterableDatasetDict

from ..errors import DataError
from .loading import (
    _detect_columns,
    _feature_type,
    _guarded,
    _is_saved_dataset,
    _load_raw,
    _standardise,
    looks_like_path,
)

__all__ = ["load_streaming_dataset"]


def load_streaming_dataset(
    spec: str,
    split: str | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    mask_column: str | None = None,
) -> IterableDataset | IterableDatasetDict:
    """``spec`` as streams with the standard columns (see the module docstring): the ``split``, or
    with ``split=None`` every split.

    >>> stream = load_streaming_dataset("./chest_xray", "test")
    >>> next(iter(stream))["label"]
    0
    """
    raw = _load_streams(spec)
    if split is not None and split not in raw:
        raise DataError(f"split '{split}' not found in '{spec}'; splits: {list(raw)}")
    if any(stream.features is None for stream in raw.values()):
        raise DataError(
            f"the columns of '{spec}' are unknown until its rows are read, so it cannot be streamed; "
            "load it without --streaming"
        )
    columns = _detect_columns(raw, image_column, label_column, mask_column)
    feature = next(iter(raw.values())).features[columns["label"]]
    if not isinstance(feature, ClassLabel):
        raise DataError(
            f"label column '{columns['label']}' holds {_feature_type(feature)}: a streamed data set needs "
            "ClassLabel labels (their names are known without reading every row); load it without --streaming"
        )
    chosen = [split] if split is not None else list(raw)
    result = IterableDatasetDict({name: _standardise(raw[name], columns, list(feature.names)) for name in chosen})
    return result[split] if split is not None else result


def _load_streams(spec: str) -> IterableDatasetDict:
    path = os.path.expanduser(spec) if isinstance(spec, str) else ""
    if path and os.path.isdir(path) and not _is_saved_dataset(path):
        loaded = _guarded(spec, datasets.load_dataset, "imagefolder", data_dir=path, streaming=True)
    elif path.strip() and not spec.startswith("builtin:") and not looks_like_path(spec):
        loaded = _guarded(spec, datasets.load_dataset, spec, streaming=True)
    else:  # built-in sets and save_to_disk folders (and _load_raw's errors for anything else)
        return IterableDatasetDict({name: split.to_iterable_dataset() for name, split in _load_raw(spec).items()})
    if isinstance(loaded, IterableDataset):
        return IterableDatasetDict({"train": loaded})
    if not isinstance(loaded, IterableDatasetDict) or len(loaded) == 0:
        raise DataError(f"data set '{spec}' has no splits to stream")
    return loaded
