"""Which of a model's outputs each class of a data set is: by name, never silently by position.

The metric takes the true label as the Grad-CAM target class (docs/METHOD.md, section 1), so a data set's label
``i`` must mean the model's output ``i``. :func:`align_labels` matches the data set's class names
to the model's (exactly, else case-insensitively), so a data set with a subset of the model's
classes, or the same classes in another order, scores correctly; an explicit ``label_map``
(``{data set class: model class}``) covers names that differ. Names that match nothing are an
error that lists both sets: mapping them by position would score one class as another.

    >>> aligned = align_labels(dataset, ["glioma", "meningioma", "no_tumor", "pituitary"])
    >>> aligned.mapping
    {'glioma': 'glioma', 'pituitary': 'pituitary'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from datasets import ClassLabel, Dataset, IterableDataset

from ..errors import DataError

__all__ = ["LabelAlignment", "align_labels", "parse_label_map"]

_SHOWN = 12  # class names quoted in a message before "..."


@dataclass(frozen=True)
class LabelAlignment:
    """``dataset`` with its labels re-indexed into the model's outputs (``label_names``)."""

    dataset: Dataset | IterableDataset
    label_names: list[str]
    mapping: dict[str, str]
    """Data set class -> model class, in the data set's class order."""

    @property
    def model_classes(self) -> list[str]:
        """The model classes the data set has samples of (distinct, in the data set's class order)."""
        return list(dict.fromkeys(self.mapping.values()))


def align_labels(
    dataset: Dataset | IterableDataset, model_names: Sequence[str], label_map: Mapping[str, str] | None = None
) -> LabelAlignment:
    """Map ``dataset``'s ``label`` column (a ClassLabel) onto ``model_names`` by class name; a
    stream (:class:`datasets.IterableDataset`) is relabelled lazily, as its rows are read.

    ``label_map`` names the model class of data set classes whose names differ; every other class
    must match a model class by name (exact, else case-insensitive and unique). Raises
    :class:`~hf_gazecons.errors.DataError` naming the classes that match nothing.
    """
    feature = (dataset.features or {}).get("label")
    if not isinstance(feature, ClassLabel):
        raise DataError("the data set has no ClassLabel 'label' column (load it with load_image_dataset)")
    dataset_names, model_names = list(feature.names), [str(name) for name in model_names]
    label_map = dict(label_map or {})
    _check_label_map(label_map, dataset_names, model_names)
    mapping, unmatched = {}, []
    for name in dataset_names:
        match = label_map.get(name) or _match(name, model_names)
        if match is None:
            unmatched.append(name)
        else:
            mapping[name] = match
    if unmatched:
        model = f"the model's {len(model_names)} classes {_show(model_names)}"
        problem = (
            f"none of the data set's classes {_show(unmatched)} is one of {model}"
            if len(unmatched) == len(dataset_names)
            else f"the data set's classes {_show(unmatched)} are not among {model}"
        )
        raise DataError(f"{problem}; name the model class of each with --label-map DATA=MODEL,... (label_map=)")
    if dataset_names == model_names:
        return LabelAlignment(dataset, model_names, mapping)
    index = {name: i for i, name in enumerate(model_names)}
    new_label = [index[mapping[name]] for name in dataset_names]
    if isinstance(dataset, IterableDataset):  # a stream: relabelled as its rows are read
        features = dataset.features.copy()
        features["label"] = ClassLabel(names=model_names)
        relabelled = dataset.map(lambda row: {"label": new_label[row["label"]]}, features=features)
        return LabelAlignment(relabelled, model_names, mapping)
    labels = [new_label[label] for label in dataset["label"]]
    relabelled = dataset.remove_columns("label").add_column("label", labels, feature=ClassLabel(names=model_names))
    return LabelAlignment(relabelled, model_names, mapping)


def parse_label_map(text: str) -> dict[str, str]:
    """``"cat=Cat,dog=Dog"`` -> ``{"cat": "Cat", "dog": "Dog"}`` (the ``--label-map`` syntax)."""
    pairs = [pair.strip() for pair in text.split(",") if pair.strip()]
    mapping: dict[str, str] = {}
    for pair in pairs:
        source, equals, destination = pair.partition("=")
        if not equals or not source.strip() or not destination.strip():
            raise ValueError(f"expected DATA=MODEL pairs separated by commas, got {pair!r}")
        if source.strip() in mapping:
            raise ValueError(f"class {source.strip()!r} is mapped twice")
        mapping[source.strip()] = destination.strip()
    if not mapping:
        raise ValueError("expected DATA=MODEL pairs separated by commas")
    return mapping


def _check_label_map(label_map: dict[str, str], dataset_names: list[str], model_names: list[str]) -> None:
    unknown = [name for name in label_map if name not in dataset_names]
    if unknown:
        raise DataError(
            f"--label-map names {_show(unknown)}, which the data set does not have; its classes: {_show(dataset_names)}"
        )
    missing = [name for name in label_map.values() if name not in model_names]
    if missing:
        raise DataError(
            f"--label-map maps to {_show(missing)}, which the model does not have; its classes: {_show(model_names)}"
        )


def _match(name: str, model_names: list[str]) -> str | None:
    if name in model_names:
        return name
    folded = [candidate for candidate in model_names if candidate.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def _show(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    return f"[{shown}{', ...' if len(names) > _SHOWN else ''}]"
