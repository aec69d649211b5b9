"""The subset behind ``--max-samples`` (``score``) and ``--max_train_samples``/``--max_eval_samples``
(``train``): one rule, so that a model is scored on the very images it was evaluated on in training.

The rule is a seeded random choice, not the first N rows: image folders and many Hub data sets are
sorted by class, and their first rows are often all of one class.
"""

from __future__ import annotations

import warnings

import datasets

from ..errors import DataError

__all__ = ["select_subset"]


def select_subset(
    dataset: datasets.Dataset | datasets.IterableDataset, n: int | None, seed: int
) -> datasets.Dataset | datasets.IterableDataset:
    """At most ``n`` rows of ``dataset``: all of them when ``n`` is None or not below the length,
    else the first ``n`` rows of ``dataset.shuffle(seed=seed)`` (in that shuffled order).

    A stream cannot be shuffled that way: of a :class:`datasets.IterableDataset` the first ``n``
    rows are taken, with a warning that they are not the subset of the same split loaded whole.

    >>> select_subset(load_image_dataset("builtin:shapes", "validation"), 10, seed=42).num_rows
    10
    """
    if n is None:
        return dataset
    if n < 1:
        raise DataError(f"the number of samples to use must be at least 1, got {n}")
    if isinstance(dataset, datasets.IterableDataset):
        warnings.warn(
            f"a streamed data set gives its first {n} rows, not the seeded random subset that the same split "
            "loaded whole gives (and that train's --max_eval_samples uses); load it without streaming to compare",
            stacklevel=2,
        )
        return dataset.take(n)
    if n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))
