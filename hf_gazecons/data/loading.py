"""Load any image classification data set with standardised columns.

:func:`load_image_dataset` accepts a built-in name (``builtin:shapes?jitter=0.3``), a local
directory (written by ``save_to_disk``, or an image folder with one sub-folder per class) or a Hub
data set id, and returns data sets whose only columns are ``image`` (Image), ``label``
(ClassLabel) and, where the source has masks, ``mask`` (Image, mode "L", nonzero = object); two
columns of plain values are kept for the per-image table where the source has them: ``id`` (the
first of :data:`ID_NAMES`) and ``planted`` (bool: the built-ins' planted images).
"""

from __future__ import annotations

import inspect
import json
import os
import typing
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Image, IterableDataset, IterableDatasetDict, Value

from ..checks import parse_bool
from ..errors import DataError, first_line
from ..hub import check_hub_reachable
from .brain import make_brain
from .builtin import make_digits, make_shapes

__all__ = ["BUILTINS", "default_eval_split", "load_image_dataset", "select_split"]

#: ``builtin:<name>`` data sets and their generators (options = keyword arguments).
BUILTINS: dict[str, Callable[..., DatasetDict]] = {"shapes": make_shapes, "digits": make_digits, "brain": make_brain}

IMAGE_NAMES = ("image", "img", "images", "picture", "pixel_values")
LABEL_NAMES = ("label", "labels", "class", "target", "fine_label")
MASK_NAMES = ("mask", "masks", "segmentation_mask")
ID_NAMES = ("id", "image_id", "img_id", "uid", "file_name", "filename")
PLANTED = "planted"
EVAL_SPLITS = ("validation", "valid", "val", "test", "train")


def load_image_dataset(
    spec: str,
    split: str | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    mask_column: str | None = None,
) -> Dataset | DatasetDict:
    """Load ``spec`` like :func:`datasets.load_dataset` and standardise its columns.

    ``split=None`` returns a DatasetDict of all splits, a split name that split's Dataset.
    Columns are detected (or named with ``image_column=``/``label_column=``/``mask_column=``),
    renamed to ``image``/``label``/``mask`` and all others dropped; integer labels become a
    ClassLabel with names "0".."max" (string labels: their sorted values).

    Args:
        spec: ``builtin:shapes`` / ``builtin:digits`` / ``builtin:brain`` (options as a query
            string), a Hub data set id, an image folder or a ``save_to_disk`` folder.
        split: one split's name, or None for all of them.
        image_column, label_column, mask_column: the source's column names, where detection
            would not find them.

    Returns:
        A ``Dataset`` (one split) or ``DatasetDict`` with the columns ``image``, ``label`` and, where
        the source has masks, ``mask``.

    Raises:
        DataError: the data set cannot be loaded, the split does not exist, or the columns are
            missing, ambiguous or of the wrong type (one line, naming what was found).

    Example:
        >>> val = load_image_dataset("builtin:shapes?num_classes=3&size=64", "validation")
        >>> val.column_names
        ['image', 'label', 'mask']
    """
    raw = _load_raw(spec)
    if label_column is None:
        _check_folder_classes(spec, raw)
    chosen = {split: select_split(raw, split, spec)} if split is not None else dict(raw)
    columns = _detect_columns(raw, image_column, label_column, mask_column)
    label_names = _label_names(raw, columns["label"])
    result = {name: _standardise(ds, columns, label_names) for name, ds in chosen.items()}
    return result[split] if split is not None else DatasetDict(result)


def default_eval_split(names: Iterable[str]) -> str:
    """The split to evaluate on: the first of validation, valid, val, test, train present.

    >>> default_eval_split(["train", "test"])
    'test'
    """
    names = list(names)
    for candidate in EVAL_SPLITS:
        if candidate in names:
            return candidate
    raise DataError(
        f"no evaluation split among {names}; expected one of {list(EVAL_SPLITS)} (pass the split name explicitly)"
    )


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _load_raw(spec: str) -> DatasetDict:
    """The source as a DatasetDict, columns untouched."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data set spec must be a non-empty string, got {spec!r}")
    if spec.startswith("builtin:"):
        return _load_builtin(spec)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        if _is_saved_dataset(path):
            return _as_dict(spec, _guarded(spec, _load_from_disk, path))
        return _as_dict(spec, _guarded(spec, datasets.load_dataset, "imagefolder", data_dir=path))
    if looks_like_path(spec):
        raise DataError(
            f"data set path '{spec}' is not a directory; pass an image folder (one sub-folder per "
            "class), a directory written by save_to_disk, builtin:<name> or a Hub data set id"
        )
    if not datasets.config.HF_HUB_OFFLINE:
        check_hub_reachable(f"load data set {spec!r}")
    return _as_dict(spec, _guarded(spec, datasets.load_dataset, spec))


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` names a local path (existing or not) rather than a Hub id."""
    return os.path.exists(os.path.expanduser(spec)) or spec.startswith(("/", "./", "../", "~", ".\\"))


def _check_folder_classes(spec: str, raw: DatasetDict) -> None:
    """An image folder's classes are its sub-folders; with fewer than two, ``imagefolder`` gives no
    label column at all, which would read as a missing column rather than as what it is."""
    path = os.path.expanduser(spec)
    if spec.startswith("builtin:") or not os.path.isdir(path) or _is_saved_dataset(path):
        return
    if any(isinstance(feature, ClassLabel) for split in raw.values() for feature in split.features.values()):
        return
    roots = [os.path.join(path, name) for name in raw if os.path.isdir(os.path.join(path, name))] or [path]
    classes = sorted({name for root in roots for name in os.listdir(root) if os.path.isdir(os.path.join(root, name))})
    if len(classes) < 2:
        found = f"one class (the sub-folder {classes[0]!r})" if classes else "no class sub-folders"
        raise DataError(
            f"the image folder '{spec}' has {found}: a classifier needs at least 2 classes, "
            "one sub-folder of images per class (e.g. train/cat/*.png, train/dog/*.png)"
        )


def _load_builtin(spec: str) -> DatasetDict:
    name, _, query = spec[len("builtin:") :].partition("?")
    if name not in BUILTINS:
        raise DataError(f"unknown built-in data set '{name}'; available: {sorted(BUILTINS)}")
    generator = BUILTINS[name]
    return generator(**_parse_options(name, query, generator))


def _parse_options(name: str, query: str, generator: Callable) -> dict:
    """``a=1&b=0.5`` -> keyword arguments typed by ``generator``'s annotations."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise DataError(
            f"cannot parse options '{query}' of builtin:{name}; write them as a URL query, "
            f"e.g. builtin:{name}?seed=1&size=64"
        ) from None
    hints = typing.get_type_hints(generator)
    valid = list(inspect.signature(generator).parameters)
    options = {}
    for key, text in pairs:
        if key not in valid:
            raise DataError(f"unknown option '{key}' of builtin:{name}; valid options: {valid}")
        if key in options:
            raise DataError(f"option '{key}' of builtin:{name} is given twice")
        options[key] = _convert(name, key, text, hints.get(key, str))
    return options


def _convert(name: str, key: str, text: str, kind: type):
    try:
        return parse_bool(text) if kind is bool else kind(text)
    except ValueError:
        raise DataError(f"option '{key}' of builtin:{name} must be {kind.__name__}, got '{text}'") from None


def _load_from_disk(path: str) -> Dataset | DatasetDict:
    """``datasets.load_from_disk``, except that a split saved with no rows comes back empty with its
    features (``save_to_disk`` writes no arrow file for it and ``load_from_disk`` then fails)."""
    dict_file = os.path.join(path, "dataset_dict.json")
    if not os.path.isfile(dict_file):
        return _load_saved_split(path)
    with open(dict_file) as f:
        splits = json.load(f)["splits"]
    return DatasetDict({split: _load_saved_split(os.path.join(path, split)) for split in splits})


def _load_saved_split(path: str) -> Dataset:
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    if not state.get("_data_files"):
        features = datasets.DatasetInfo.from_directory(path).features
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.load_from_disk(path)


def _is_saved_dataset(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json"))


def _guarded(spec: str, loader: Callable, *args, **kwargs):
    """Call a datasets loader; any failure becomes a one-line DataError."""
    try:
        return loader(*args, **kwargs)
    except Exception as exc:  # the loaders raise many unrelated types
        reason = first_line(exc)
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise DataError(f"data set '{spec}' could not be loaded: {reason}") from exc


def _as_dict(spec: str, loaded) -> DatasetDict:
    if isinstance(loaded, DatasetDict) and len(loaded) == 0:
        raise DataError(f"data set '{spec}' has no splits")
    if isinstance(loaded, DatasetDict):
        return loaded
    if isinstance(loaded, Dataset):  # a single saved Dataset: call its split "train"
        return DatasetDict({"train": loaded})
    raise DataError(
        f"expected a Dataset or DatasetDict, got {type(loaded).__name__} (streaming/iterable "
        "data sets are not supported)"
    )


def select_split(data: DatasetDict | IterableDatasetDict, split: str, spec: str) -> Dataset | IterableDataset:
    """``data[split]``, or a DataError naming the splits there are, or saying that it is empty."""
    if split not in data:
        raise DataError(f"split '{split}' not found in '{spec}'; splits: {list(data)}")
    dataset = data[split]
    if isinstance(dataset, Dataset) and len(dataset) == 0:  # a stream's length is unknown
        raise DataError(f"split '{split}' of '{spec}' is empty")
    return dataset


# ---------------------------------------------------------------------------------------------
# column detection
# ---------------------------------------------------------------------------------------------
def _detect_columns(
    raw: DatasetDict, image_column: str | None, label_column: str | None, mask_column: str | None
) -> dict[str, str | None]:
    """Source column names for ``image``, ``label`` and ``mask`` (None: no mask)."""
    features = next(iter(raw.values())).features
    mask = _find_mask(features, mask_column)
    taken = {mask: "mask"} if mask is not None else {}
    image = _find(features, taken, image_column, "image", _is_image, IMAGE_NAMES, _image_name_ok)
    taken[image] = "image"
    label = _find(features, taken, label_column, "label", _is_class_label, LABEL_NAMES)
    taken[label] = "label"
    values = [n for n, f in features.items() if n not in taken and isinstance(f, Value)]
    row_id = next((n for n in ID_NAMES if n in values), None)
    planted = PLANTED if PLANTED in values and features[PLANTED].dtype == "bool" else None
    return {"image": image, "label": label, "mask": mask, "id": row_id, PLANTED: planted}


def _find(features, taken, named, role, is_typed, names, name_ok=lambda n, f: True) -> str:
    """The named column; else the single one of the right feature type; else the single one
    with a usual name (among the typed ones when there are several). ``taken``: used columns."""
    if named is not None:
        _check_exists(features, named, role)
        if named in taken:
            raise DataError(f"column '{named}' cannot be both the {taken[named]} and the {role}")
        return named
    free = {name: f for name, f in features.items() if name not in taken}
    typed = [name for name, f in free.items() if is_typed(f)]
    if len(typed) == 1:
        return typed[0]
    pool = typed if typed else list(free)
    by_name = [name for name in pool if name in names and name_ok(name, free[name])]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1 or len(typed) > 1:
        raise DataError(
            f"ambiguous {role} column: {by_name or typed} all qualify; pass {role}_column=...; "
            f"columns: {_describe(features)}"
        )
    raise DataError(
        f"no {role} column found (expected a {_TYPE_OF[role]} column or one named "
        f"{list(names)}); pass {role}_column=...; columns: {_describe(features)}"
    )


def _find_mask(features, named: str | None) -> str | None:
    if named is not None:
        _check_exists(features, named, "mask")
        return named
    found = [n for n in MASK_NAMES if n in features and _is_image(features[n])]
    if len(found) > 1:
        raise DataError(
            f"ambiguous mask column: {found} all qualify; pass mask_column=...; columns: {_describe(features)}"
        )
    return found[0] if found else None


def _check_exists(features, name: str, role: str) -> None:
    if name not in features:
        raise DataError(f"{role} column '{name}' not found; columns: {_describe(features)}")


_TYPE_OF = {"image": "datasets.Image", "label": "ClassLabel"}


def _is_image(feature) -> bool:
    return isinstance(feature, Image)


def _is_class_label(feature) -> bool:
    return isinstance(feature, ClassLabel)


def _image_name_ok(name: str, feature) -> bool:
    """``pixel_values`` counts only as an Image (it usually holds tensors)."""
    return name != "pixel_values" or _is_image(feature)


def _describe(features) -> str:
    return "[" + ", ".join(f"{name} ({_feature_type(f)})" for name, f in features.items()) + "]"


def _feature_type(feature) -> str:
    if isinstance(feature, Value):
        return f"Value({feature.dtype})"
    if isinstance(feature, ClassLabel):
        return f"ClassLabel({feature.num_classes})"
    return type(feature).__name__


# ---------------------------------------------------------------------------------------------
# standardisation
# ---------------------------------------------------------------------------------------------
def _label_names(raw: DatasetDict, column: str) -> list[str]:
    """Class names shared by all splits: the ClassLabel's, "0".."max" for ints, sorted strings."""
    feature = next(iter(raw.values())).features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    dtype = feature.dtype if isinstance(feature, Value) else None
    if dtype is not None and dtype.startswith(("int", "uint")):
        top = max((max(d.unique(column)) for d in raw.values() if len(d)), default=0)
        return [str(i) for i in range(int(top) + 1)]
    if dtype in ("string", "large_string"):
        return sorted({v for d in raw.values() for v in d.unique(column)})
    raise DataError(
        f"label column '{column}' holds {_feature_type(feature)}, not class labels; use a "
        "ClassLabel, integer or string column (pass label_column=...)"
    )


def _standardise(dataset: Dataset, columns: dict, label_names: list[str]) -> Dataset:
    """Keep the image/label/mask columns, renamed and cast to the standard features."""
    keep = [c for c in columns.values() if c is not None]
    dataset = dataset.select_columns(keep)
    rename = {src: dst for dst, src in columns.items() if src is not None and src != dst}
    if rename:
        dataset = dataset.rename_columns(rename)
    _check_label_values(dataset, columns["label"])
    dataset = _cast(dataset, "image", Image(), columns["image"])
    dataset = _cast(dataset, "label", ClassLabel(names=label_names), columns["label"])
    if columns["mask"] is not None:
        dataset = _cast(dataset, "mask", Image(mode="L"), columns["mask"])
    return dataset


def _check_label_values(dataset: Dataset, source: str) -> None:
    feature = dataset.features["label"]
    if isinstance(feature, Value) and feature.dtype.startswith("int") and len(dataset):
        low = min(dataset.unique("label"))
        if low < 0:
            raise DataError(
                f"label column '{source}' has negative values ({low}; unlabelled rows?); use a labelled split"
            )


def _cast(dataset: Dataset, column: str, target, source: str) -> Dataset:
    if dataset.features[column] == target:
        return dataset
    current = dataset.features[column]
    if isinstance(target, Image) and not (
        isinstance(current, Image) or _feature_type(current) in ("Value(string)", "Value(binary)")
    ):
        raise DataError(
            f"{column} column '{source}' holds {_feature_type(current)}, not images; "
            f"pass {column}_column=... naming an Image column"
        )
    try:
        return dataset.cast_column(column, target)
    except Exception as exc:  # arrow raises several types
        reason = first_line(exc)
        raise DataError(
            f"{column} column '{source}' ({_feature_type(current)}) cannot be used as {type(target).__name__}: {reason}"
        ) from exc
