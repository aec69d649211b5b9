"""Tests of hf_gazecons.data: built-in data sets, loading/standardisation, the torch wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, IterableDataset, IterableDatasetDict, Value
from PIL import Image as PILImage
from tiny import assert_same_seed_same_bytes, image_bytes, tiny_cnn_accuracy
from torchvision import transforms

from hf_gazecons.cam import GradCAM
from hf_gazecons.data import (
    ImageClassificationDataset,
    IterableImageClassificationDataset,
    default_eval_split,
    load_image_dataset,
    load_streaming_dataset,
    make_digits,
    make_shapes,
    select_subset,
)
from hf_gazecons.data.builtin import SHAPE_NAMES
from hf_gazecons.data.torch_dataset import decode_image
from hf_gazecons.errors import DataError

SMALL = {"num_classes": 3, "size": 48, "n_train": 4, "n_val": 2, "n_test": 2}


@pytest.fixture(scope="module")
def small_shapes() -> DatasetDict:
    return make_shapes(**SMALL, seed=0)


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep the image-folder caches of these tests out of the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _png_folder(root, layout: dict[str, dict[str, int]], size=(20, 16)) -> None:
    """Write ``layout[split][class]`` random PNGs into root/split/class/."""
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
                PILImage.fromarray(pixels).save(folder / f"{i}.png")


def _centroids(dataset: Dataset) -> np.ndarray:
    out = []
    for mask in dataset["mask"]:
        ys, xs = np.nonzero(np.asarray(mask))
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


# ---------------------------------------------------------------------------------------------
# built-in: shapes
# ---------------------------------------------------------------------------------------------
def test_shapes_is_deterministic(small_shapes):
    assert_same_seed_same_bytes(small_shapes, make_shapes(**SMALL, seed=0), make_shapes(**SMALL, seed=1))
    # the splits use different sub-seeds
    assert image_bytes(small_shapes["validation"]) != image_bytes(small_shapes["test"])


def test_shapes_columns_features_and_sizes(small_shapes):
    assert list(small_shapes) == ["train", "validation", "test"]
    for split, per_class in (("train", 4), ("validation", 2), ("test", 2)):
        ds = small_shapes[split]
        assert ds.column_names == ["image", "label", "mask"]
        assert isinstance(ds.features["image"], Image)
        assert ds.features["mask"] == Image(mode="L")
        assert ds.features["label"] == ClassLabel(names=["circle", "square", "triangle"])
        assert np.bincount(ds["label"][:], minlength=3).tolist() == [per_class] * 3
        row = ds[0]
        assert row["image"].mode == "RGB" and row["image"].size == (48, 48)
        assert row["mask"].mode == "L" and row["mask"].size == (48, 48)
    gray = make_shapes(num_classes=2, size=32, n_train=1, n_val=1, n_test=1, grayscale=True)
    assert gray["train"][0]["image"].mode == "L"


def test_shapes_supports_eight_classes_and_rejects_more():
    dsd = make_shapes(num_classes=8, size=40, n_train=1, n_val=1, n_test=1)
    assert dsd["train"].features["label"].names == list(SHAPE_NAMES)
    with pytest.raises(DataError, match="2 to 8 classes"):
        make_shapes(num_classes=9)
    with pytest.raises(DataError, match="jitter"):
        make_shapes(jitter=-0.1)
    with pytest.raises(DataError, match="n_val"):
        make_shapes(n_val=0)


def test_shapes_mask_is_the_visible_planted_object(small_shapes):
    for row in small_shapes["train"]:
        mask = np.asarray(row["mask"])
        assert set(np.unique(mask).tolist()) <= {0, 255}
        inside = mask > 0
        assert inside.sum() >= 20  # non-empty, a real object
        ys, xs = np.nonzero(inside)
        # inside the image, not cut by the border
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < 47 and xs.max() < 47
        # drawn last in one colour: nothing covers it, the mask matches the pixels
        pixels = np.asarray(row["image"])[inside]
        assert (pixels == pixels[0]).all()


def test_jitter_spreads_the_object_location():
    def spread(jitter: float) -> float:
        ds = make_shapes(num_classes=2, size=64, n_train=30, n_val=1, n_test=1, jitter=jitter, seed=3)["train"]
        cents, labels = _centroids(ds), np.array(ds["label"][:])
        return float(np.mean([cents[labels == k].std(axis=0).mean() for k in (0, 1)]))

    tight, medium, loose = spread(0.02), spread(0.1), spread(0.3)
    assert tight < 2.0  # pixels: nearly the same place within a class
    assert tight < medium < loose
    assert loose > 3 * tight


def test_shapes_is_learnable_by_a_tiny_cnn():
    dsd = make_shapes(num_classes=4, size=64, n_train=40, n_val=25, n_test=1, seed=0)
    accuracy = tiny_cnn_accuracy(dsd, seed=0)
    assert accuracy >= 0.6, f"validation accuracy {accuracy:.2f} (chance 0.25)"


# ---------------------------------------------------------------------------------------------
# built-in: digits
# ---------------------------------------------------------------------------------------------
def test_digits_splits_classes_and_sizes():
    dsd = make_digits(size=24, seed=0)
    sizes = {split: len(ds) for split, ds in dsd.items()}
    assert list(sizes) == ["train", "validation", "test"]
    assert sum(sizes.values()) == 1797
    assert abs(sizes["train"] / 1797 - 0.7) < 0.01 and abs(sizes["test"] - sizes["validation"]) <= 1
    for ds in dsd.values():
        assert ds.column_names == ["image", "label"]
        assert ds.features["label"].names == [str(d) for d in range(10)]
        assert sorted(set(ds["label"][:])) == list(range(10))  # stratified
    row = dsd["train"][0]
    assert row["image"].mode == "L" and row["image"].size == (24, 24)
    assert np.asarray(row["image"]).max() > 100
    assert image_bytes(make_digits(size=24, seed=0)["test"]) == image_bytes(dsd["test"])
    assert dsd["test"]["label"][:] != make_digits(size=24, seed=1)["test"]["label"][:]


# ---------------------------------------------------------------------------------------------
# load_image_dataset
# ---------------------------------------------------------------------------------------------
def test_builtin_query_string_options():
    spec = "builtin:shapes?num_classes=3&size=40&n_train=2&n_val=1&n_test=1&jitter=0.3&grayscale=1&seed=2"
    dsd = load_image_dataset(spec)
    assert isinstance(dsd, DatasetDict) and list(dsd) == ["train", "validation", "test"]
    assert dsd["train"].features["label"].names == ["circle", "square", "triangle"]
    assert dsd["train"][0]["image"].mode == "L" and dsd["train"][0]["image"].size == (40, 40)
    direct = make_shapes(num_classes=3, size=40, n_train=2, n_val=1, n_test=1, jitter=0.3, grayscale=True, seed=2)
    assert image_bytes(dsd["test"]) == image_bytes(direct["test"])
    val = load_image_dataset("builtin:digits?size=12", "validation")
    assert isinstance(val, Dataset) and val[0]["image"].size == (12, 12)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("builtin:shapes?colour=red", r"unknown option 'colour'.*valid options: \['num_classes'"),
        ("builtin:shapes?size=big", "option 'size' of builtin:shapes must be int, got 'big'"),
        ("builtin:shapes?grayscale=maybe", "must be bool"),
        ("builtin:shapes?size=40&size=50", "given twice"),
        (
            "builtin:squares",
            r"unknown built-in data set 'squares'; available: \['brain', 'digits', 'shapes'\]",
        ),
    ],
)
def test_builtin_option_errors(spec, message):
    with pytest.raises(DataError, match=message):
        load_image_dataset(spec)


def test_imagefolder_directory(tmp_path):
    _png_folder(tmp_path, {"train": {"dog": 3, "cat": 2}, "validation": {"cat": 1, "dog": 1}})
    dsd = load_image_dataset(str(tmp_path))
    assert list(dsd) == ["train", "validation"]
    assert dsd["train"].column_names == ["image", "label"]
    assert dsd["train"].features["label"].names == ["cat", "dog"]
    assert sorted(dsd["train"]["label"][:]) == [0, 0, 1, 1, 1]
    val = load_image_dataset(str(tmp_path), "validation")
    assert isinstance(val, Dataset) and len(val) == 2 and val[0]["image"].size == (20, 16)


def test_save_to_disk_round_trip(tmp_path, small_shapes):
    small_shapes.save_to_disk(str(tmp_path / "dict"))
    loaded = load_image_dataset(str(tmp_path / "dict"))
    assert list(loaded) == list(small_shapes)
    assert loaded["test"].features == small_shapes["test"].features
    assert image_bytes(loaded["test"], "mask") == image_bytes(small_shapes["test"], "mask")
    # a single saved Dataset becomes the split "train"
    small_shapes["validation"].save_to_disk(str(tmp_path / "single"))
    single = load_image_dataset(str(tmp_path / "single"), "train")
    assert image_bytes(single) == image_bytes(small_shapes["validation"])


def _custom(tmp_path, columns: dict, features: dict, splits=("train",), name="custom") -> str:
    """Save a DatasetDict with the given columns (same rows in every split)."""
    dsd = DatasetDict({s: Dataset.from_dict(columns, features=Features(features)) for s in splits})
    path = tmp_path / name
    dsd.save_to_disk(str(path))
    return str(path)


def _images(n, size=(8, 8), mode="RGB"):
    return [PILImage.new(mode, size, color=i * 20) for i in range(n)]


def test_columns_are_detected_renamed_and_dropped(tmp_path):
    path = _custom(
        tmp_path,
        {
            "img": _images(3),
            "segmentation_mask": _images(3, mode="L"),
            "fine_label": [0, 2, 1],
            "coarse": [0, 1, 0],
            "note": ["a", "b", "c"],
        },
        {
            "img": Image(),
            "segmentation_mask": Image(),
            "fine_label": Value("int64"),
            "coarse": Value("int64"),
            "note": Value("string"),
        },
    )
    ds = load_image_dataset(path, "train")
    assert ds.column_names == ["image", "label", "mask"]
    assert ds.features["label"] == ClassLabel(names=["0", "1", "2"])
    assert ds.features["mask"] == Image(mode="L")
    assert ds[0]["mask"].mode == "L" and ds["label"][:] == [0, 2, 1]


def test_several_classlabels_pick_fine_label(tmp_path):
    path = _custom(
        tmp_path,
        {"img": _images(2), "fine_label": [0, 1], "coarse_label": [0, 0]},
        {
            "img": Image(),
            "fine_label": ClassLabel(names=["x", "y"]),
            "coarse_label": ClassLabel(names=["z"]),
        },
    )
    assert load_image_dataset(path, "train").features["label"].names == ["x", "y"]


def test_int_labels_share_names_across_splits(tmp_path):
    train = Dataset.from_dict({"image": _images(2), "label": [0, 3]})
    val = Dataset.from_dict({"image": _images(2), "label": [1, 1]})
    DatasetDict({"train": train, "validation": val}).save_to_disk(str(tmp_path / "ints"))
    val = load_image_dataset(str(tmp_path / "ints"), "validation")
    assert val.features["label"].names == ["0", "1", "2", "3"]


def test_named_columns_and_string_labels(tmp_path):
    path = _custom(
        tmp_path,
        {"a": _images(3), "b": _images(3), "y": ["dog", "cat", "dog"]},
        {"a": Image(), "b": Image(), "y": Value("string")},
    )
    ds = load_image_dataset(path, "train", image_column="b", label_column="y")
    assert ds.column_names == ["image", "label"]
    assert ds.features["label"].names == ["cat", "dog"] and ds["label"][:] == [1, 0, 1]
    with_mask = load_image_dataset(path, "train", image_column="b", label_column="y", mask_column="a")
    assert with_mask.column_names == ["image", "label", "mask"]


def test_column_errors(tmp_path):
    path = _custom(
        tmp_path,
        {"a": _images(2), "b": _images(2), "label": [0, 1], "labels": [1, 0]},
        {"a": Image(), "b": Image(), "label": Value("int64"), "labels": Value("int64")},
    )
    with pytest.raises(DataError, match=r"ambiguous image column: \['a', 'b'\].*image_column="):
        load_image_dataset(path)
    with pytest.raises(DataError, match=r"ambiguous label column: \['label', 'labels'\]"):
        load_image_dataset(path, image_column="a")
    with pytest.raises(DataError, match=r"image column 'pic' not found; columns: \[a \(Image\)"):
        load_image_dataset(path, image_column="pic")
    with pytest.raises(DataError, match=r"label column 'y' not found; columns: .*labels \(Value"):
        load_image_dataset(path, image_column="a", label_column="y")
    with pytest.raises(DataError, match="mask column 'seg' not found"):
        load_image_dataset(path, mask_column="seg")
    with pytest.raises(DataError, match="cannot be both the image and the label"):
        load_image_dataset(path, image_column="a", label_column="a")

    no_image = _custom(
        tmp_path,
        {"x": [1, 2], "label": [0, 1]},
        {"x": Value("int64"), "label": Value("int64")},
        name="noimage",
    )
    with pytest.raises(DataError, match=r"no image column found.*columns: \[x \(Value\(int64\)\)"):
        load_image_dataset(no_image)
    floats = _custom(
        tmp_path,
        {"image": _images(2), "label": [0.5, 1.5]},
        {"image": Image(), "label": Value("float32")},
        name="floats",
    )
    with pytest.raises(DataError, match="holds Value.float32., not class labels"):
        load_image_dataset(floats)
    negative = _custom(
        tmp_path,
        {"image": _images(2), "label": [-1, -1]},
        {"image": Image(), "label": Value("int64")},
        name="negative",
    )
    with pytest.raises(DataError, match="negative values"):
        load_image_dataset(negative, "train")


def test_split_errors(tmp_path, monkeypatch):
    from hf_gazecons.data import loading

    train = Dataset.from_dict({"image": _images(2), "label": [0, 1]})
    DatasetDict({"train": train, "test": train}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"split 'validation' not found in '.*'; splits: \['train', 'test'\]"):
        load_image_dataset(str(tmp_path / "d"), "validation")
    with pytest.raises(DataError, match="split 'nope' not found"):
        load_image_dataset("builtin:shapes?size=32&n_train=1&n_val=1&n_test=1", "nope")

    # datasets cannot save an empty split: serve one through a stand-in built-in
    def make_empty(seed: int = 0) -> DatasetDict:
        return DatasetDict({"train": train, "test": train.select([])})

    monkeypatch.setitem(loading.BUILTINS, "empty", make_empty)
    with pytest.raises(DataError, match=r"^split 'test' of 'builtin:empty' is empty$"):
        load_image_dataset("builtin:empty", "test")
    assert len(load_image_dataset("builtin:empty", "train")) == 2


def test_missing_dataset_is_one_line(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as info:
        load_image_dataset("no-such-user-xyz/no-such-dataset")
    message = str(info.value)
    assert message.startswith("data set 'no-such-user-xyz/no-such-dataset' could not be loaded: ")
    assert "\n" not in message and "Traceback" not in message
    with pytest.raises(DataError, match="is not a directory"):
        load_image_dataset(str(tmp_path / "missing-dir"))


def test_default_eval_split():
    assert default_eval_split(["train", "validation", "test"]) == "validation"
    assert default_eval_split(["test", "train"]) == "test"
    assert default_eval_split(DatasetDict({"train": Dataset.from_dict({"a": [1]})})) == "train"
    assert default_eval_split(["val", "train"]) == "val"
    with pytest.raises(DataError, match="no evaluation split"):
        default_eval_split(["extra"])


# ---------------------------------------------------------------------------------------------
# ImageClassificationDataset
# ---------------------------------------------------------------------------------------------
def test_torch_dataset_items_masks_and_collate(small_shapes):
    transform = transforms.Compose([transforms.Resize((64, 64)), transforms.ToTensor()])
    tds = ImageClassificationDataset(small_shapes["train"], transform)
    assert len(tds) == 12 and tds.label_names == ["circle", "square", "triangle"]
    item = tds[5]
    assert item["pixel_values"].shape == (3, 64, 64)
    assert item["labels"] == small_shapes["train"][5]["label"]
    mask = item["masks"]
    assert mask.dtype == torch.bool and mask.shape == (64, 64) and mask.any()
    expected = small_shapes["train"][5]["mask"].resize((64, 64), PILImage.NEAREST)
    assert torch.equal(mask, torch.from_numpy(np.asarray(expected) > 0))

    batch = next(iter(torch.utils.data.DataLoader(tds, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 64, 64)
    assert batch["labels"].shape == (4,)
    assert batch["masks"].shape == (4, 64, 64) and batch["masks"].dtype == torch.bool

    gray = ImageClassificationDataset(small_shapes["test"], transforms.ToTensor(), mode="L")
    assert gray[0]["pixel_values"].shape == (1, 48, 48) and gray[0]["masks"].shape == (48, 48)


def test_torch_dataset_without_masks_and_bad_input():
    ds = Dataset.from_dict({"image": _images(2), "label": [0, 1]})
    item = ImageClassificationDataset(ds, transforms.ToTensor())[1]
    assert set(item) == {"pixel_values", "labels"}
    with pytest.raises(DataError, match="mode"):
        ImageClassificationDataset(ds, transforms.ToTensor(), mode="CMYK")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['label'\]"):
        ImageClassificationDataset(ds.remove_columns("label"), transforms.ToTensor())


def test_corrupt_image_names_its_index(tmp_path):
    _png_folder(tmp_path, {"train": {"a": 2, "b": 2}})
    (tmp_path / "train" / "b" / "9.png").write_bytes(b"this is not a png")
    ds = load_image_dataset(str(tmp_path), "train")
    tds = ImageClassificationDataset(ds, transforms.ToTensor())
    bad = [
        i for i in range(len(ds)) if ds.cast_column("image", Image(decode=False))[i]["image"]["path"].endswith("9.png")
    ]
    assert len(bad) == 1
    assert tds[0]["pixel_values"].shape == (3, 16, 20)
    with pytest.raises(DataError, match=rf"^image {bad[0]} of the train split cannot be read: .*9\.png"):
        tds[bad[0]]


# ---------------------------------------------------------------------------------------------
# decoding near the input size, the main-process thread count, subsets, streams
# ---------------------------------------------------------------------------------------------
def _jpeg_folder(root, per_class: int = 3, size: int = 200) -> None:
    """train/ and validation/ with classes a and b of smooth grayscale JPEGs (``size`` px)."""
    y, x = np.mgrid[0:size, 0:size] / size
    for split in ("train", "validation"):
        for c, name in enumerate("ab"):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = 127 + 100 * np.sin(2 * np.pi * (x * (i + 1) + y * (c + 1)))
                PILImage.fromarray(pixels.astype(np.uint8), "L").save(root / split / name / f"{i}.jpg", quality=90)


def test_decode_image_drafts_jpegs_near_the_requested_size(tmp_path):
    _jpeg_folder(tmp_path, per_class=1, size=200)
    value = {"bytes": None, "path": str(tmp_path / "train" / "a" / "0.jpg")}
    assert decode_image(value).size == (200, 200)
    assert decode_image(value, (48, 48)).size == (50, 50)  # 1/4 scale: the smallest with sides >= 48
    assert decode_image(value, (60, 40)).size == (100, 100)  # every side >= the largest requested side
    assert decode_image({"bytes": (tmp_path / "train" / "a" / "0.jpg").read_bytes(), "path": None}, (48, 48)).size == (
        50,
        50,
    )
    png = tmp_path / "x.png"
    PILImage.new("RGB", (200, 100)).save(png)
    assert decode_image({"bytes": None, "path": str(png)}, (48, 48)).size == (200, 100)  # only JPEGs draft


def test_drafted_items_are_close_to_full_decoding(tmp_path):
    """The reduced-scale decode is a proper downsampling: the model's input barely changes."""
    from hf_gazecons.preprocessing import plain_preprocessing

    _jpeg_folder(tmp_path, per_class=2, size=200)
    rows = load_image_dataset(str(tmp_path), "train")
    prep = plain_preprocessing(48, channels=1)
    drafted = ImageClassificationDataset.with_preprocessing(rows, prep)
    full = ImageClassificationDataset(rows, prep, mode="L")
    assert drafted.decode_size == (48, 48) and full.decode_size is None
    for i in range(len(rows)):
        a, b = drafted[i]["pixel_values"], full[i]["pixel_values"]
        assert a.shape == b.shape == (1, 48, 48)
        assert (a - b).abs().mean() < 0.02 and (a - b).abs().max() < 0.15  # on the [-1, 1] scale
        assert drafted[i]["labels"] == full[i]["labels"]


def test_drafted_jpegs_score_like_full_decoding(tmp_path):
    """gaze_consistency on a JPEG folder (decoded at 1/4 scale, 384 -> 96 px) against the same images
    decoded in full: the same labels and predictions, Grad-CAM maps within 0.05 (max abs, maps
    min-max scaled to [0, 1]) and L_CAM within 2 % (relative). Measured: 0.024 and 0.1 %."""
    from hf_gazecons.metric import gaze_consistency
    from hf_gazecons.models import load_model

    _jpeg_folder(tmp_path, per_class=6, size=384)
    rows = load_image_dataset(str(tmp_path), "train")
    torch.manual_seed(0)
    loaded = load_model("test_resnet", label_names=["a", "b"], image_size=96, grayscale=True)
    prep = loaded.preprocessing
    path = rows.cast_column("image", Image(decode=False))[0]["image"]
    assert decode_image(path, prep.image_size).size == (96, 96)  # the draft path is taken: 1/4 scale
    full = ImageClassificationDataset(rows, prep, mode="L")  # no decode_size: decoded in full, then resized
    drafted = gaze_consistency(loaded, rows, batch_size=4, progress=False)  # the library's own (drafted) path
    whole = gaze_consistency(loaded, torch.utils.data.DataLoader(full, batch_size=4), progress=False)
    assert drafted.n_samples == whole.n_samples == 12
    assert drafted.per_class["a"].n_samples == whole.per_class["a"].n_samples == 6  # the same labels
    assert drafted.n_correct == whole.n_correct >= 2 and drafted.accuracy == whole.accuracy
    assert drafted.value is not None and drafted.value == pytest.approx(whole.value, rel=0.02)
    cam = GradCAM(loaded.model.eval())
    batch = [ImageClassificationDataset.with_preprocessing(rows, prep)[i] for i in range(len(rows))]
    maps_drafted = cam(torch.stack([item["pixel_values"] for item in batch])).maps
    maps_full = cam(torch.stack([full[i]["pixel_values"] for i in range(len(rows))])).maps
    assert (maps_drafted - maps_full).abs().max() < 0.05
    assert torch.equal(torch.tensor([item["labels"] for item in batch]), torch.tensor(rows["label"]))


def test_main_process_transforms_run_on_one_thread_and_restore_it(small_shapes):
    seen = []

    def transform(image):
        seen.append(torch.get_num_threads())
        return transforms.ToTensor()(image)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ImageClassificationDataset(small_shapes["train"], transform)[0]
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_training_items_report_the_flip_and_match_timm_s_own_flip(small_shapes):
    """The flip is drawn where timm's RandomHorizontalFlip draws it: same seeds, same tensors."""
    import random

    import timm

    from hf_gazecons.preprocessing import processor_preprocessing, timm_preprocessing

    prep = timm_preprocessing(timm.create_model("test_resnet", num_classes=3), image_size=48)
    common = {k: v for k, v in prep.data_config.items() if k not in ("crop_pct", "crop_mode")}
    timm_flip = timm.data.create_transform(**common, is_training=True, scale=(0.9, 1.0), hflip=0.5, color_jitter=None)
    items = ImageClassificationDataset.with_preprocessing(small_shapes["train"], prep, train=True, report_flips=True)
    ours, theirs = [], []
    for out, make in ((ours, lambda i: items[i]), (theirs, lambda i: timm_flip(small_shapes["train"][i]["image"]))):
        random.seed(0), torch.manual_seed(0)
        out.extend(make(i) for i in range(len(items)))
    assert {item["flipped"] for item in ours} == {True, False}
    for item, expected in zip(ours, theirs):
        assert torch.equal(item["pixel_values"], expected)
    random.seed(0)  # the crop draws from Python's generator, the flip from torch's
    unflipped = [prep.train_transform(small_shapes["train"][i]["image"].convert("RGB")) for i in range(len(items))]
    for item, plain in zip(ours, unflipped):
        assert torch.equal(item["pixel_values"], plain.flip(-1) if item["flipped"] else plain)
    evaluation = ImageClassificationDataset.with_preprocessing(small_shapes["train"], prep)[0]
    assert "flipped" not in evaluation
    # without report_flips the items are what a model's forward takes, and the images are the same
    unreported = ImageClassificationDataset.with_preprocessing(small_shapes["train"], prep, train=True)
    random.seed(0), torch.manual_seed(0)
    plain_items = [unreported[i] for i in range(len(unreported))]
    assert all(set(item) == {"pixel_values", "labels", "masks"} for item in plain_items)
    for item, flagged in zip(plain_items, ours):
        assert torch.equal(item["pixel_values"], flagged["pixel_values"])

    class Processor:  # a processor's own training transforms: their flips are unknown
        size = {"height": 48, "width": 48}

        def __call__(self, images, return_tensors):
            return {"pixel_values": transforms.ToTensor()(images)[None]}

    unknown = processor_preprocessing(Processor())
    assert "flipped" not in ImageClassificationDataset.with_preprocessing(small_shapes["train"], unknown, True, True)[0]


def test_select_subset_is_train_s_rule_and_score_s_default_seed(small_shapes):
    from transformers import TrainingArguments

    from hf_gazecons.cli.common import DEFAULT_SEED
    from hf_gazecons.finetune import ModelDataArguments, _splits

    assert DEFAULT_SEED == TrainingArguments("unused").seed  # score's default picks train's default subset
    spec = "builtin:shapes?num_classes=3&size=32&n_train=6&n_val=5&n_test=2"
    validation = load_image_dataset(spec, "validation")
    picked = select_subset(validation, 7, seed=3)
    expected = validation.shuffle(seed=3).select(range(7))  # seeded random rows, not the first ones
    assert image_bytes(picked) == image_bytes(expected) and picked["label"] == expected["label"]
    assert image_bytes(picked) != image_bytes(validation.select(range(7)))
    _, eval_rows, _, test_rows = _splits(ModelDataArguments(dataset=spec, max_eval_samples=7), seed=3)
    assert image_bytes(eval_rows) == image_bytes(picked)  # train --max_eval_samples 7 --seed 3: the same rows
    assert len(test_rows) == 6  # fewer rows than asked for: all of them
    assert select_subset(validation, None, seed=0) is validation and select_subset(validation, 99, 0) is validation
    with pytest.raises(DataError, match="at least 1"):
        select_subset(validation, 0, seed=0)


def test_select_subset_of_a_stream_takes_its_first_rows_with_a_warning(small_shapes):
    stream = small_shapes["train"].to_iterable_dataset()
    with pytest.warns(UserWarning, match="first 3 rows"):
        first = list(select_subset(stream, 3, seed=0))
    assert [row["label"] for row in first] == small_shapes["train"]["label"][:3]


def test_streamed_image_folder_and_builtin_have_the_standard_columns(tmp_path, small_shapes):
    _jpeg_folder(tmp_path / "folder")
    streams = load_streaming_dataset(str(tmp_path / "folder"))
    assert isinstance(streams, IterableDatasetDict) and set(streams) == {"train", "validation"}
    whole = load_image_dataset(str(tmp_path / "folder"), "train")
    stream = load_streaming_dataset(str(tmp_path / "folder"), "train")
    assert isinstance(stream, IterableDataset) and stream.features == whole.features
    assert sorted(row["label"] for row in stream) == sorted(whole["label"])
    builtin = load_streaming_dataset("builtin:shapes?num_classes=3&size=48&n_train=4&n_val=2&n_test=2", "test")
    assert builtin.features == small_shapes["test"].features and len(list(builtin)) == 6
    small_shapes.save_to_disk(str(tmp_path / "saved"))
    assert len(list(load_streaming_dataset(str(tmp_path / "saved"), "validation"))) == 6


def test_streaming_errors(tmp_path):
    with pytest.raises(DataError, match=r"split 'test' not found .*\['train', 'validation'\]"):
        _jpeg_folder(tmp_path / "folder")
        load_streaming_dataset(str(tmp_path / "folder"), "test")
    Dataset.from_dict({"image": _images(2), "label": [0, 1]}).save_to_disk(str(tmp_path / "ints"))
    with pytest.raises(DataError, match=r"holds Value\(int64\): a streamed data set needs ClassLabel labels"):
        load_streaming_dataset(str(tmp_path / "ints"), "train")
    with pytest.raises(DataError, match="is not a directory"):
        load_streaming_dataset(str(tmp_path / "missing"))


def test_iterable_torch_dataset_gives_the_map_style_items(small_shapes):
    prep = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    stream = IterableImageClassificationDataset(small_shapes["train"].to_iterable_dataset(), prep)
    map_style = ImageClassificationDataset(small_shapes["train"], prep)
    items = list(stream)
    assert len(items) == len(map_style)
    for i, item in enumerate(items):
        assert torch.equal(item["pixel_values"], map_style[i]["pixel_values"])
        assert torch.equal(item["masks"], map_style[i]["masks"]) and item["labels"] == map_style[i]["labels"]
    two_workers = torch.utils.data.DataLoader(
        IterableImageClassificationDataset(small_shapes["train"].to_iterable_dataset(num_shards=2), prep),
        batch_size=4,
        num_workers=2,
    )
    labels = torch.cat([batch["labels"] for batch in two_workers])
    assert sorted(labels.tolist()) == sorted(small_shapes["train"]["label"])  # each row once, none twice


def test_corrupt_image_in_a_stream_names_where(tmp_path):
    _png_folder(tmp_path, {"train": {"a": 2, "b": 1}})
    (tmp_path / "train" / "b" / "0.png").write_bytes(b"not a png")
    stream = load_streaming_dataset(str(tmp_path), "train")
    with pytest.raises(DataError, match=r"^image \d of the stream cannot be read: "):
        list(IterableImageClassificationDataset(stream, transforms.ToTensor()))
