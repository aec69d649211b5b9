"""Images that cannot be decoded, left out of a run and recorded (``--skip-bad-images``).

Without the option, the first row whose image cannot be decoded stops ``score`` and ``train`` with
an error naming its index and file. With it, :func:`drop_bad_images` decodes every row once before
the run, exactly as the run will (the model's input mode, JPEGs drafted near its input size; the
transform is not applied, so no random augmentation is drawn), leaves the rows that fail out with
``Dataset.select`` and returns what it left out (:class:`BadImage`). The rows that remain are the
data set without its broken files, in the same order: a run on them gives the figures of a run on
a copy of the data without those files. More than ``max_share`` of the rows broken is an error: a
folder of mostly broken files is a problem to fix, not a data set to score.

A stream is not checked this way: it would have to be read twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import datasets
import torch
from tqdm.auto import tqdm

from ..errors import DataError, UnreadableImageError
from .torch_dataset import ImageClassificationDataset

if TYPE_CHECKING:
    from ..preprocessing import Preprocessing

__all__ = ["DEFAULT_MAX_BAD_SHARE", "BadImage", "drop_bad_images", "find_bad_images"]

DEFAULT_MAX_BAD_SHARE = 0.01
"""The share of broken images above which a run fails even with ``--skip-bad-images``."""


@dataclass(frozen=True)
class BadImage:
    """A row left out: its ``index`` in the data set as given to the run (after ``--max-samples``; the
    index an error names without ``--skip-bad-images``), its file (None for images stored as bytes)
    and why the decoder refused it."""

    index: int
    path: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"image {self.index}{f' ({self.path})' if self.path else ''}: {self.reason}"


class _Checks(torch.utils.data.Dataset):
    """Item ``i``: the :class:`BadImage` of row ``i``, or None where it decodes (for a DataLoader's workers)."""

    def __init__(self, items: ImageClassificationDataset) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> BadImage | None:
        try:
            self.items.check(i)
        except UnreadableImageError as error:
            return BadImage(int(i), error.path, str(error.reason))
        return None


def _as_list(batch: list[BadImage | None]) -> list[BadImage | None]:
    return batch


def find_bad_images(items: ImageClassificationDataset, num_workers: int = 0, progress: bool = True) -> list[BadImage]:
    """Every row of ``items`` whose image (or mask) cannot be decoded, in row order; ``num_workers``
    processes decode in parallel."""
    loader = torch.utils.data.DataLoader(  # its own generator: the check draws nothing from torch's global one
        _Checks(items), batch_size=64, num_workers=num_workers, collate_fn=_as_list, generator=torch.Generator()
    )
    bar = None if progress else True  # None: a bar on terminals, none in logs and pipes
    return [bad for batch in tqdm(loader, desc="checking images", unit="batch", disable=bar) for bad in batch if bad]


def drop_bad_images(
    dataset: datasets.Dataset,
    preprocessing: Preprocessing,
    max_share: float | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[datasets.Dataset, list[BadImage]]:
    """``dataset`` without the rows whose image cannot be decoded for ``preprocessing``'s model, and
    those rows (see the module docstring). ``max_share``: None for :data:`DEFAULT_MAX_BAD_SHARE`.

    Raises:
        DataError: more than ``max_share`` of the rows cannot be decoded (the message names the first ones).
    """
    if isinstance(dataset, datasets.IterableDataset):
        raise DataError("broken images cannot be left out of a stream (it would be read twice); load it whole")
    bad = find_bad_images(ImageClassificationDataset.with_preprocessing(dataset, preprocessing), num_workers, progress)
    if not bad:
        return dataset, []
    total, max_share = len(dataset), DEFAULT_MAX_BAD_SHARE if max_share is None else max_share
    if len(bad) > max_share * total:
        split = getattr(dataset, "split", None)
        first = "; ".join(map(str, bad[:3])) + ("; ..." if len(bad) > 3 else "")
        raise DataError(
            f"{len(bad)} of {total} images of {f'the {split} split' if split else 'the data set'} cannot be read "
            f"({len(bad) / total:.1%}, more than --max-bad-image-share {max_share:g}): {first}"
        )
    left_out = {b.index for b in bad}
    return dataset.select([i for i in range(total) if i not in left_out]), bad
