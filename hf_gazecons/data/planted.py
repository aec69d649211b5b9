"""Shared machinery of the generated built-in data sets (``builtin:shapes``, ``builtin:brain``, ...).

* :func:`planted_splits` - the three splits of a planted-object benchmark from a per-sample renderer,
  deterministic for a seed (one :class:`numpy.random.SeedSequence` child per split), optionally
  with a known share of validation images drawn by another renderer (the ``planted`` column);
* :func:`check_planted_options` - the one-line :class:`DataError` checks of the options they share;
* :func:`encode_png` - the fast PNG encoding every built-in stores its images with.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from ..errors import DataError

__all__ = ["SPLITS", "Renderer", "check_planted_options", "encode_png", "planted_splits"]

SPLITS = ("train", "validation", "test")

#: ``renderer(rng, label) -> (image, mask)``: one sample of class ``label``, both as
#: :func:`encode_png` dicts, drawing all its randomness from ``rng``.
Renderer = Callable[[np.random.Generator, int], tuple[dict, dict]]


def planted_splits(
    names: Sequence[str],
    counts: Mapping[str, int],
    seed: int,
    render: Renderer,
    planted: float = 0.0,
    render_planted: Renderer | None = None,
) -> DatasetDict:
    """Splits ``train``/``validation``/``test`` with columns ``image``, ``label`` and ``mask``.

    ``counts[split]`` images per class, in an order shuffled by the split's own generator (a child
    of ``SeedSequence(seed)``), so that each split depends on the seed alone and not on the sizes
    of the other splits. ``render`` draws each sample from that generator in turn.

    With ``planted > 0``, ``round(planted * n)`` of the ``n`` validation images (at least one),
    chosen by a generator of their own, are drawn by ``render_planted`` instead, which must take
    the same random numbers as ``render``: every other image stays byte-identical to the data set
    without them. A bool column ``planted`` marks them (False everywhere else).
    """
    columns = {"image": Image(), "label": ClassLabel(names=list(names)), "mask": Image(mode="L")}
    if planted:
        columns["planted"] = Value("bool")
    sub_seeds = np.random.SeedSequence(seed).spawn(len(SPLITS) + 1)  # the first children do not depend on the count
    chosen = _planted_rows(planted, counts["validation"] * len(names), sub_seeds[-1]) if planted else set()
    splits = {}
    for split, sub_seed in zip(SPLITS, sub_seeds):
        rng = np.random.default_rng(sub_seed)
        labels = rng.permutation(np.repeat(np.arange(len(names)), counts[split]))
        images, masks, marks = [], [], []
        for row, label in enumerate(labels):
            mark = split == "validation" and row in chosen
            image, mask = (render_planted if mark else render)(rng, int(label))
            images.append(image)
            masks.append(mask)
            marks.append(mark)
        data = {"image": images, "label": [int(x) for x in labels], "mask": masks}
        if planted:
            data["planted"] = marks
        splits[split] = Dataset.from_dict(data, features=Features(columns))
    return DatasetDict(splits)


def _planted_rows(share: float, n: int, seed: np.random.SeedSequence) -> set[int]:
    """Which of ``n`` validation rows are planted: ``round(share * n)`` of them (at least one)."""
    k = min(n, max(1, round(share * n)))
    return set(np.random.default_rng(seed).choice(n, size=k, replace=False).tolist())


def check_planted_options(
    kind: str,
    size: int,
    min_size: int,
    n_train: int,
    n_val: int,
    n_test: int,
    jitter: float,
    distractors: int,
    planted: float = 0.0,
) -> None:
    """One-line DataErrors for the options every planted-object built-in shares."""
    if not 0.0 <= planted < 1.0:
        raise DataError(f"{kind} needs 0 <= planted < 1 (share of the validation images), got {planted}")
    if size < min_size:
        raise DataError(f"{kind} needs size >= {min_size} pixels, got size={size}")
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if value < 1:
            raise DataError(f"{kind} needs {name} >= 1 image per class, got {name}={value}")
    if not 0.0 <= jitter <= 1.0:
        raise DataError(f"{kind} needs 0 <= jitter <= 1 (fraction of the image size), got {jitter}")
    if distractors < 0:
        raise DataError(f"{kind} needs distractors >= 0, got {distractors}")


def encode_png(image: PILImage.Image) -> dict:
    """Encode as PNG with fast compression (the default level 6 makes generation 3x slower)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}
