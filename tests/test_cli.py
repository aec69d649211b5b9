"""Tests of the ``hf-gazecons`` command line (hf_gazecons/cli/): score, cam, demo, train, help, errors.

Most commands run in-process through :func:`hf_gazecons.cli.main.main`; a few run as the real
console script (each start imports torch/timm/transformers, so those run concurrently).
Everything is tiny: random-init timm ``test_resnet`` at 48x48 and a few built-in/hand-made images.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from console import Runs, console_script
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from tiny import CONSISTENCY_JSON_KEYS, LOCALIZATION_JSON_KEYS, LOCALIZATION_SHARES, random_test_resnet, without_times

import hf_gazecons.plots as plots
from hf_gazecons.cam_family import cam_methods
from hf_gazecons.class_maps import load_class_maps
from hf_gazecons.cli.main import main
from hf_gazecons.data import load_image_dataset, select_subset
from hf_gazecons.data.builtin import SHAPE_NAMES
from hf_gazecons.metric import gaze_consistency
from hf_gazecons.models import load_model, save_model

SIZE = 48
SHAPES = f"builtin:shapes?num_classes=3&size={SIZE}&n_train=4&n_val=6&n_test=2"
SHAPE_CLASSES = list(SHAPE_NAMES[:3])
FOLDER_CLASSES = ["bird", "cat", "dog"]  # imagefolder sorts the class folders

JSON_KEYS = CONSISTENCY_JSON_KEYS | {"random_weights", "seed", "skipped_images"}  # what score adds
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCORE_FILES = [
    "class_maps.safetensors", "class_means.png", "consistency.json", "examples", "overlays.png", "report.html",
    "samples.parquet",
]  # fmt: skip
"""What a ``score`` output folder holds, sorted."""


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep the image-folder caches of these tests apart (and out of the user's cache)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _random_model(label_names: list[str], seed: int = 0):
    return random_test_resnet(label_names, SIZE, seed)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A local timm export (save_model) with the 3 shape classes."""
    path = tmp_path_factory.mktemp("models") / "shapes3"
    save_model(_random_model(SHAPE_CLASSES), path)
    return path


@pytest.fixture(scope="module")
def two_class_model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "shapes2"
    save_model(load_model("test_resnet", label_names=SHAPE_CLASSES[:2], image_size=SIZE), path)
    return path


def _write_images(root: Path, classes: list[str], per_class: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split in ("train", "validation"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                PILImage.fromarray(pixels).save(folder / f"{name}_{i}.png")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """train/<class>/*.png and validation/<class>/*.png, 3 classes x 2 images."""
    root = tmp_path_factory.mktemp("folder") / "images"
    _write_images(root, FOLDER_CLASSES, per_class=2)
    return root


def cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    """Run ``hf-gazecons argv`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with PILImage.open(path) as image:
        image.verify()


def assert_no_staging(parent: Path, name: str) -> None:
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(f".{name}-")]
    assert not leftovers, f"staging folders left behind: {leftovers}"


def assert_clean_error(rc: int, err: str, out_dir: Path, *patterns: str) -> str:
    """Exit 2, exactly one ``error: ...`` line (the last one), no traceback, no output written."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    message = errors[0]
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    assert not out_dir.exists(), f"{out_dir} was left behind"
    if out_dir.parent.exists():
        assert_no_staging(out_dir.parent, out_dir.name)
    return message


def read_json(out_dir: Path) -> dict:
    return json.loads((out_dir / "consistency.json").read_text())


def approx_equal(actual, expected, path: str = "") -> None:
    """Nested equality with float tolerance (None and NaN compare as themselves)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{path}: {actual} != {expected}"
        for key in expected:
            approx_equal(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual} != {expected}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            approx_equal(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(actual, (int, float)), f"{path}: {actual!r} != {expected!r}"
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual} != nan"
        else:
            assert actual == pytest.approx(expected, rel=1e-6, abs=1e-9), f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


# ---------------------------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------------------------
def test_help_lists_the_commands(capsys):
    from hf_gazecons.cli.main import COMMANDS

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-gazecons")
    assert set(COMMANDS) == {"score", "train", "demo", "cam", "push", "sweep", "report", "app"}
    for command in COMMANDS:  # listed with its one-line help
        assert re.search(rf"^\s+{command}\s+\w", out, re.M), f"{command} missing from:\n{out}"


def test_train_help_is_hf_argument_parser_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-gazecons train")
    for option in (
        "--lambda_max",
        "--t0",
        "--t1",
        "--ema_alpha",
        "--variant",
        "--second_order",
        "--model",
        "--dataset",
        "--output_dir",
        "--num_train_epochs",
    ):  # the last two: TrainingArguments
        assert re.search(rf"{option}\b", out), f"{option} missing from train --help"


def test_no_command_is_a_usage_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: the following arguments are required: COMMAND (see hf-gazecons --help)"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------------
def test_score_local_timm_export_end_to_end(model_dir, tmp_path, capsys):
    out_dir = tmp_path / "scored"
    rc, out, err = cli(capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--output-dir", out_dir)
    assert rc == 0, err
    assert "Traceback" not in err

    result = read_json(out_dir)
    assert set(result) == JSON_KEYS
    assert result["model"] == str(model_dir)
    assert result["dataset"] == SHAPES
    assert result["split"] == "validation"  # the default evaluation split
    assert result["variant"] == "paper" and result["grid"] is None
    assert result["target_layer"] and isinstance(result["target_layer"], str)
    assert len(result["cam_size"]) == 2 and all(isinstance(n, int) and n > 0 for n in result["cam_size"])
    assert result["n_samples"] == 3 * 6
    assert list(result["per_class"]) == SHAPE_CLASSES
    for entry in result["per_class"].values():
        assert set(entry) == {"gaze_consistency", "n_correct", "n_samples", "n_zero_maps"}
        assert entry["n_samples"] == 6
        assert entry["gaze_consistency"] is None or entry["gaze_consistency"] >= 0
        assert (entry["gaze_consistency"] is None) == (entry["n_correct"] < 2)
    assert sum(e["n_correct"] for e in result["per_class"].values()) == result["n_correct"]
    assert sum(e["n_zero_maps"] for e in result["per_class"].values()) == result["n_zero_maps"]
    assert result["zero_map_share"] == (result["n_zero_maps"] / result["n_correct"] if result["n_correct"] else None)
    assert set(result["gaze_consistency_by_variant"]) == {"paper", "pearson", "robust"}
    assert result["gaze_consistency_by_variant"]["paper"] == result["gaze_consistency"]
    assert result["accuracy"] == pytest.approx(result["n_correct"] / result["n_samples"])
    assert result["kappa"] is None or -1 <= result["kappa"] <= 1
    assert result["gaze_consistency"] is not None  # the random model gets >= 2 samples of a class right
    # shapes has masks: localisation is reported
    located = result["localization"]
    assert set(located) == LOCALIZATION_JSON_KEYS and located["tolerance"] == 0
    assert all(0 <= located[name] <= 1 for name in LOCALIZATION_SHARES)
    assert set(located["per_class"]) <= set(SHAPE_CLASSES)

    assert sorted(p.name for p in out_dir.iterdir()) == SCORE_FILES
    assert_png(out_dir / "class_means.png")
    assert_png(out_dir / "overlays.png")
    assert_no_staging(tmp_path, "scored")

    assert re.search(r"accuracy\s+[\d.]+", out) and re.search(r"kappa\s+[-\d.]+", out)
    assert re.search(r"L_CAM\s+[\d.]+", out)
    assert "pointing game" in out
    for name in SHAPE_CLASSES:
        assert re.search(rf"^{name}\s", out, re.M), f"no table row for {name}:\n{out}"
    assert f"{result['accuracy']:.4f}" in out
    assert f"{result['gaze_consistency']:.4f}" in out


@pytest.mark.parametrize(
    ("options", "library_kwargs", "expected"),
    [
        ([], {}, {"variant": "paper", "grid": None}),
        (
            ["--variant", "reference", "--grid", "3", "3"],
            {"variant": "reference", "grid": (3, 3)},
            {"variant": "reference", "grid": [3, 3]},
        ),
        (["--target-layer", "layer3"], {"target": "layer3"}, {"target_layer": "layer3"}),
        (
            ["--target-layer", "-2", "--max-samples", "7"],
            {"target": -2, "max_samples": 7},
            {"target_layer": "layer3", "n_samples": 7},
        ),  # timm stage index -2 of a 4-stage ResNet
        (["--variant", "robust"], {"variant": "robust"}, {"variant": "robust"}),
        (["--dtype", "bfloat16"], {"dtype": torch.bfloat16}, {"variant": "paper"}),
        (
            ["--cam-method", "layercam", "--target-layer", "layer3"],
            {"cam_method": "layercam", "target": "layer3"},
            {"cam_method": "layercam"},
        ),
    ],
    ids=["default", "reference-grid", "layer3", "stage-2-max-samples", "robust", "bfloat16", "layercam"],
)
def test_score_json_equals_the_library(model_dir, tmp_path, capsys, options, library_kwargs, expected):
    """The CLI is thin: consistency.json is gaze_consistency(...) on the same model and data."""
    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--output-dir", out_dir, *options)
    assert rc == 0, err
    result = read_json(out_dir)
    for key, value in expected.items():
        assert result[key] == value, key

    kwargs = dict(library_kwargs)
    data = load_image_dataset(SHAPES, "validation")
    if "max_samples" in kwargs:  # the seeded subset train's --max_eval_samples takes (default seed 42)
        data = select_subset(data, kwargs.pop("max_samples"), seed=42)
    library = gaze_consistency(load_model(str(model_dir)), data, progress=False, **kwargs).to_dict()
    library.update(model=str(model_dir), dataset=SHAPES, split="validation", random_weights=False)
    library.update(seed=42, skipped_images=[])  # score's default seed; nothing skipped without --skip-bad-images
    approx_equal(result, library)


def test_score_every_cam_method_in_one_pass(model_dir, tmp_path, capsys):
    """--cam-method all: each method's entry is gaze_consistency(..., cam_method=m); the top level is
    Grad-CAM's; every pair of methods has a rank correlation; the table is printed."""
    out_dir = tmp_path / "all"
    common = ["--model", model_dir, "--dataset", SHAPES, "--target-layer", "layer3"]
    rc, out, err = cli(capsys, "score", *common, "--cam-method", "all", "--output-dir", out_dir)
    assert rc == 0, err
    result = read_json(out_dir)
    assert set(result) == JSON_KEYS | {
        "by_cam_method", "cam_method_rank_correlation", "cam_method_rank_correlation_images"
    }  # fmt: skip
    methods = list(cam_methods())
    assert list(result["by_cam_method"]) == methods and result["cam_method"] == "gradcam"
    assert result["by_cam_method"]["gradcam"]["gaze_consistency"] == result["gaze_consistency"]
    assert len(result["cam_method_rank_correlation"]) == len(methods) * (len(methods) - 1) // 2
    assert result["cam_method_rank_correlation_images"] == result["n_correct"] > 2
    data = load_image_dataset(SHAPES, "validation")
    for method in ("gradcam", "scorecam", "eigencam"):
        single = gaze_consistency(load_model(str(model_dir)), data, target="layer3", cam_method=method, progress=False)
        entry = result["by_cam_method"][method]
        assert entry["cam_method"] == method
        assert entry["gaze_consistency_by_variant"] == pytest.approx(single.values, abs=1e-6)
        assert entry["n_zero_maps"] == single.n_zero_maps
    assert "Spearman rank correlation of the per-image deviations" in out
    for method in methods:
        assert re.search(rf"^{method}\s+[\d.]+\s+[\d.]+", out, re.M), f"no row for {method}:\n{out}"
    assert_png(out_dir / "class_means.png")


def test_score_streaming_equals_loading_whole(model_dir, image_folder, tmp_path, capsys):
    """--streaming reads the same images (a built-in set, and an image folder whose classes are
    relabelled onto the model's in another order) and so gives the same consistency.json."""
    relabel = ["--label-map", "bird=triangle,cat=circle,dog=square"]
    for i, (dataset, extra) in enumerate(((SHAPES, []), (image_folder, relabel))):
        whole, streamed = tmp_path / f"whole{i}", tmp_path / f"streamed{i}"
        common = ["score", "--model", model_dir, "--dataset", dataset, "--batch-size", "4", *extra]
        assert cli(capsys, *common, "--output-dir", whole)[0] == 0
        rc, _, err = cli(capsys, *common, "--streaming", "--output-dir", streamed)
        assert rc == 0, err
        approx_equal(read_json(streamed), read_json(whole))
        assert_png(streamed / "overlays.png")


def test_score_streaming_max_samples_takes_the_first_rows_and_says_so(model_dir, tmp_path, capsys):
    with pytest.warns(UserWarning, match="a streamed data set gives its first 5 rows"):  # stderr's "warning: ..."
        rc, _, err = cli(
            capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--streaming", "--max-samples", "5",
            "--output-dir", tmp_path / "out",
        )  # fmt: skip
    assert rc == 0, err
    assert read_json(tmp_path / "out")["n_samples"] == 5


def test_score_reference_variant_refuses_in_one_line_when_its_maps_would_not_fit(
    model_dir, tmp_path, capsys, monkeypatch
):
    """The reference variant keeps every correct map; past its limit (half the available memory,
    here made 100 bytes) score stops with one error line naming the way out, and writes nothing."""
    import hf_gazecons.metric

    monkeypatch.setattr(hf_gazecons.metric, "reference_memory_limit", lambda: 100)
    out_dir = tmp_path / "out"
    rc, out, err = cli(
        capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--variant", "reference", "--output-dir", out_dir
    )
    assert rc == 2 and "accuracy" not in out  # a usage error, and no result reported
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(
        r"error: the reference variant keeps the 2x2 map of every correctly classified sample \(16 bytes each\): "
        r"18 samples may need 288 B, more than the 100 B it may use; use the paper variant .*--max-samples.*",
        lines[0],
    ), lines[0]
    assert not out_dir.exists()
    with pytest.raises(SystemExit):
        cli(capsys, "score", "--help")
    assert "'reference' keeps the map of every correctly classified sample" in " ".join(capsys.readouterr().out.split())


def test_score_split_option(model_dir, tmp_path, capsys):
    rc, _, err = cli(
        capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--split", "test", "--output-dir", tmp_path / "out"
    )
    assert rc == 0, err
    result = read_json(tmp_path / "out")
    assert result["split"] == "test" and result["n_samples"] == 3 * 2


def test_score_into_an_existing_empty_directory(model_dir, tmp_path, capsys):
    out_dir = tmp_path / "empty"
    out_dir.mkdir()
    rc, _, err = cli(
        capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--max-samples", "4", "--output-dir", out_dir
    )
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == SCORE_FILES
    assert read_json(out_dir)["n_samples"] == 4
    assert_no_staging(tmp_path, "empty")


def test_score_bare_architecture_on_image_folder(image_folder, tmp_path, capsys, monkeypatch):
    """A bare timm architecture has no trained head (score has no --pretrained): the only useful
    head is one with the data set's classes, named like them. The model's default 1000 ImageNet
    outputs ("0".."999") would give 1000 per-class entries and a 1000-column class_means.png."""
    real_plot = plots.plot_class_means

    def plot_guard(rows, label_names, path, *args, **kwargs):  # fail fast instead of drawing 1000 panels
        assert len(label_names) == len(FOLDER_CLASSES), (
            f"class_means.png would get {len(label_names)} columns ({list(label_names)[:5]}...) for a "
            f"{len(FOLDER_CLASSES)}-class data set"
        )
        return real_plot(rows, label_names, path, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_class_means", plot_guard)
    out_dir = tmp_path / "folder_scored"
    rc, out, err = cli(
        capsys,
        "score",
        "--model",
        "test_resnet",
        "--image-size",
        SIZE,
        "--dataset",
        image_folder,
        "--output-dir",
        out_dir,
    )
    assert rc == 0, err
    result = read_json(out_dir)
    assert set(result) == JSON_KEYS
    assert result["split"] == "validation" and result["n_samples"] == 6
    assert result["localization"] is None  # an image folder has no masks
    assert list(result["per_class"]) == FOLDER_CLASSES
    assert [e["n_samples"] for e in result["per_class"].values()] == [2, 2, 2]
    assert_png(out_dir / "class_means.png")
    assert_png(out_dir / "overlays.png")
    for name in FOLDER_CLASSES:
        assert re.search(rf"^{name}\s", out, re.M)


# ---------------------------------------------------------------------------------------------
# score: bad input -> one line on stderr, exit 2, nothing written
# ---------------------------------------------------------------------------------------------
def test_score_missing_local_dataset(tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, "score", "--model", "test_resnet", "--dataset", "/nonexistent/x", "--output-dir", out_dir)
    assert_clean_error(rc, err, out_dir, "/nonexistent/x")


def test_score_missing_named_column(model_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, _, err = cli(
        capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--image-column", "nope", "--output-dir", out_dir
    )
    assert_clean_error(rc, err, out_dir, "'nope'", r"\bimage\b", r"\blabel\b", r"\bmask\b")  # lists the columns


@pytest.fixture(scope="module")
def two_image_columns(tmp_path_factory) -> Path:
    images = [PILImage.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(4)]
    features = Features({"photo": Image(), "scan": Image(), "label": ClassLabel(names=SHAPE_CLASSES)})
    data = Dataset.from_dict({"photo": images, "scan": images, "label": [0, 1, 2, 0]}, features=features)
    path = tmp_path_factory.mktemp("data") / "two_images"
    DatasetDict({"validation": data}).save_to_disk(str(path))
    return path


def test_score_ambiguous_image_column(model_dir, two_image_columns, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, "score", "--model", model_dir, "--dataset", two_image_columns, "--output-dir", out_dir)
    assert_clean_error(rc, err, out_dir, "ambiguous", "photo", "scan")


def test_score_labels_outside_the_models_classes(two_class_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, "score", "--model", two_class_model_dir, "--dataset", SHAPES, "--output-dir", out_dir)
    assert_clean_error(rc, err, out_dir, r"\['triangle'\] are not among the model's 2 classes \['circle', 'square'\]")


@pytest.mark.parametrize("make_empty", ["filter", "from_dict"])
def test_score_empty_split(model_dir, tmp_path, capsys, make_empty):
    """A saved DatasetDict whose (default) validation split has no rows: the error names the split."""
    shapes = load_image_dataset(SHAPES)
    features = shapes["validation"].features
    if make_empty == "filter":
        empty = shapes["validation"].filter(lambda label: False, input_columns="label")
    else:  # what Dataset.select([]) or from_dict of empty lists gives: save_to_disk writes no arrow file
        empty = Dataset.from_dict({name: [] for name in features}, features=features)
    path = tmp_path / "saved"
    DatasetDict({"train": shapes["train"], "validation": empty}).save_to_disk(str(path))
    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, "score", "--model", model_dir, "--dataset", path, "--output-dir", out_dir)
    assert_clean_error(rc, err, out_dir, "'validation'", r"\bempty\b")


def test_score_unknown_split(model_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc, _, err = cli(
        capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--split", "nope", "--output-dir", out_dir
    )
    assert_clean_error(rc, err, out_dir, "'nope'", "validation")  # names the split and the ones there are


def test_score_unreadable_image_names_its_index(tmp_path, capsys):
    root = tmp_path / "broken_images"
    _write_images(root, FOLDER_CLASSES[:2], per_class=3)
    garbage = root / "validation" / FOLDER_CLASSES[1] / "broken.png"
    garbage.write_bytes(b"this is not a png")
    rows = load_image_dataset(str(root), "validation").cast_column("image", Image(decode=False))
    index = next(i for i, image in enumerate(rows["image"]) if image["path"].endswith("broken.png"))

    out_dir = tmp_path / "out"
    model = tmp_path / "model2"
    save_model(load_model("test_resnet", label_names=FOLDER_CLASSES[:2], image_size=SIZE), model)
    rc, _, err = cli(capsys, "score", "--model", model, "--dataset", root, "--output-dir", out_dir)
    assert_clean_error(rc, err, out_dir, rf"\bimage {index}\b")


@pytest.mark.parametrize("spec", ["no_such_architecture_xyz", "no-such-org/no-such-model"])
def test_score_unknown_model(tmp_path, capsys, spec):
    out_dir = tmp_path / "out"
    rc, _, err = cli(capsys, "score", "--model", spec, "--dataset", SHAPES, "--output-dir", out_dir)
    assert_clean_error(rc, err, out_dir, re.escape(spec))


def test_score_output_dir_not_empty(model_dir, tmp_path, capsys):
    out_dir = tmp_path / "taken"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    rc, _, err = cli(
        capsys, "score", "--model", model_dir, "--dataset", SHAPES, "--max-samples", "2", "--output-dir", out_dir
    )
    (line,) = err.strip().splitlines()
    expected = r"error: output directory '\S*taken' exists and is not empty; choose another --output-dir"
    assert rc == 2 and re.fullmatch(expected, line), line
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
    assert (out_dir / "keep.txt").read_text() == "mine"
    assert_no_staging(tmp_path, "taken")


# ---------------------------------------------------------------------------------------------
# cam
# ---------------------------------------------------------------------------------------------
def test_cam_writes_one_overlay_per_image(model_dir, tmp_path, capsys):
    shapes = load_image_dataset(SHAPES, "test")
    paths = []
    for name, row in zip(("a", "b"), shapes.select([0, 1])):
        path = tmp_path / f"{name}.png"
        row["image"].save(path)
        paths.append(path)
    out_dir = tmp_path / "cams"
    rc, out, err = cli(capsys, "cam", "--model", model_dir, "--image", *paths, "--output-dir", out_dir)
    assert rc == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["a_cam.png", "b_cam.png"]
    assert_png(out_dir / "a_cam.png")
    assert_png(out_dir / "b_cam.png")
    lines = out.strip().splitlines()
    assert len(lines) == 2
    for path, line in zip(paths, lines):
        match = re.fullmatch(rf"{re.escape(str(path))}: pred (\w+) \((\d\.\d\d)\) -> {path.stem}_cam\.png", line)
        assert match, line
        assert match.group(1) in SHAPE_CLASSES and 0 < float(match.group(2)) <= 1


def test_cam_every_method_one_picture_per_image(model_dir, tmp_path, capsys):
    path = tmp_path / "a.png"
    load_image_dataset(SHAPES, "test")[0]["image"].save(path)
    out_dir = tmp_path / "cams"
    rc, _, err = cli(capsys, "cam", "--model", model_dir, "--image", path, "--cam-method", "all",
                     "--output-dir", out_dir)  # fmt: skip
    assert rc == 0, err
    assert [p.name for p in out_dir.iterdir()] == ["a_cam.png"]
    assert_png(out_dir / "a_cam.png")


def test_cam_unreadable_image(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    out_dir = tmp_path / "cams"
    for image in (bad, tmp_path / "missing.png"):
        rc, _, err = cli(capsys, "cam", "--model", model_dir, "--image", image, "--output-dir", out_dir)
        assert_clean_error(rc, err, out_dir, re.escape(image.name))


def test_output_dir_permissions_follow_the_umask(model_dir, tmp_path, capsys):
    """Outputs are moved into place from a staging folder; the folder must not stay private (0700)."""
    umask = os.umask(0o022)
    try:
        image = tmp_path / "a.png"
        load_image_dataset(SHAPES, "test")[0]["image"].save(image)
        out_dir = tmp_path / "cams"
        rc, _, err = cli(capsys, "cam", "--model", model_dir, "--image", image, "--output-dir", out_dir)
    finally:
        os.umask(umask)
    assert rc == 0, err
    assert oct(stat.S_IMODE(out_dir.stat().st_mode)) == oct(0o755)


# ---------------------------------------------------------------------------------------------
# demo and train
# ---------------------------------------------------------------------------------------------
def test_demo_reduced(tmp_path, capsys):
    """The demo's outputs; run a second time, the same numbers (same seed, same thread count)."""

    def demo(out_dir: Path) -> tuple[int, str, str]:
        return cli(
            capsys, "demo", "--epochs", "1", "--t0", "0", "--t1", "1", "--model", "test_resnet",
            "--image-size", SIZE, "--dataset", f"builtin:shapes?size={SIZE}&n_train=8&n_val=4&n_test=2",
            "--cam-method", "hirescam", "--output-dir", out_dir,
        )  # fmt: skip

    out_dir = tmp_path / "demo"
    rc, out, err = demo(out_dir)
    assert rc == 0, err
    header = next(line for line in out.splitlines() if "baseline" in line and "pearson" in line)
    assert header.split() == ["baseline", "paper", "pearson"]
    rows = ("accuracy", "Cohen's kappa", "L_CAM, paper", "L_CAM, pearson", "all-zero maps",
            "energy pointing game (EPG, non-zero maps)", "  EPG chance", "  EPG of the perfect map",
            "pointing game (PG, 0 px, non-zero maps)", "  PG (0 px), circle", "    chance, circle",
            "maps without a ranking", "deletion AUC", "  deletion AUC, random map", "insertion AUC")  # fmt: skip
    for row in rows:
        line = next((line for line in out.splitlines() if line.startswith(row)), None)
        assert line is not None, f"no {row!r} row in:\n{out}"
        assert len(re.findall(r"(?:-?\d+\.\d{4}|n/a)", line)) == 3, line
    for run in ("baseline", "paper", "pearson"):
        for name in ("config.json", "model.safetensors", "results.json", "README.md"):
            assert (out_dir / run / name).is_file(), f"{run}/{name}"
    assert_png(out_dir / "class_means_comparison.png")
    for folder in (out_dir, out_dir / "baseline", out_dir / "paper", out_dir / "pearson"):
        assert (folder / "report.html").is_file(), folder
    assert 'id="run-pearson"' in (out_dir / "report.html").read_text()
    assert_no_staging(tmp_path, "demo")
    configs = {run: json.loads((out_dir / run / "results.json").read_text())["config"] for run in ("paper", "pearson")}
    assert configs["paper"]["lambda_max"] > 0 and configs["paper"]["variant"] == "paper"
    assert not configs["paper"]["follow_flips"]
    assert configs["pearson"]["lambda_max"] > 0 and configs["pearson"]["variant"] == "pearson"
    assert configs["pearson"]["follow_flips"]
    assert json.loads((out_dir / "baseline" / "results.json").read_text())["config"]["lambda_max"] == 0
    comparison = json.loads((out_dir / "comparison.json").read_text())
    for run in ("baseline", "paper", "pearson"):  # each arm's faithfulness, as its results.json has it
        recorded = json.loads((out_dir / run / "results.json").read_text())["faithfulness"]["summary"]
        assert comparison[run]["faithfulness"] == recorded
        assert {"eval_energy_pointing_game", "eval_chance_energy_pointing_game"} <= comparison[run].keys()
    assert {config["cam_method"] for config in configs.values()} == {"hirescam"}

    rc, again, err = demo(tmp_path / "again")
    assert rc == 0, err
    table = out[out.index(header) :].replace(str(out_dir), "OUT")  # the Trainer's log lines before it name times
    assert again[again.index(header) :].replace(str(tmp_path / "again"), "OUT") == table
    for name in ("comparison.json", "baseline/results.json", "paper/results.json", "pearson/results.json"):
        first, second = (json.loads((folder / name).read_text()) for folder in (out_dir, tmp_path / "again"))
        assert without_times(first) == without_times(second), name


def test_train_tiny_run(tmp_path, capsys):
    out_dir = tmp_path / "trained"
    rc, out, err = cli(
        capsys,
        "train",
        "--model",
        "test_resnet",
        "--dataset",
        SHAPES,
        "--image_size",
        SIZE,
        "--output_dir",
        out_dir,
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "6",
        "--lambda_max",
        "5",
        "--t0",
        "0",
        "--t1",
        "1",
        "--ema_alpha",
        "0.5",
        "--variant",
        "reference",
        "--cam_method",
        "layercam",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    )
    assert rc == 0, err
    final = out.strip().splitlines()[-1]
    pattern = rf"accuracy [\d.]+  kappa [-\d.na/]+  L_CAM [\d.na/]+  all-zero maps [\d.]+  -> {re.escape(str(out_dir))}"
    assert re.fullmatch(pattern, final), final
    for name in ("config.json", "model.safetensors", "results.json", "README.md"):
        assert (out_dir / name).is_file(), name
    config = json.loads((out_dir / "results.json").read_text())["config"]
    assert config["lambda_max"] == 5 and config["t0"] == 0 and config["t1"] == 1
    assert config["ema_alpha"] == 0.5 and config["variant"] == "reference"
    assert config["cam_method"] == "layercam"  # the penalty's and the evaluation's maps
    card = (out_dir / "README.md").read_text()
    assert "**LayerCAM**" in card and "cam_method: layercam" in card and "config: layercam" in card  # model-index
    assert (config["per_sample"], config["per_sample_path"]) == ("held_stats", "independent")  # the head's map
    assert config["label_names"] == SHAPE_CLASSES
    reloaded = load_model(str(out_dir))
    assert reloaded.label_names == SHAPE_CLASSES
    # the final evaluation's per-image table, class maps and report
    final = json.loads((out_dir / "results.json").read_text())["final"]
    table = pd.read_parquet(out_dir / "samples.parquet")
    assert len(table) == 3 * 6 and table["index"].tolist() == list(range(18))
    counted = table[table["in_l_cam"]]
    for variant in ("paper", "robust", "reference"):
        key = "eval_gaze_consistency" if variant == "paper" else f"eval_{variant}_gaze_consistency"
        expected = final[key]
        assert (counted[f"deviation_{variant}"].mean() if len(counted) else None) == pytest.approx(expected, rel=1e-9)
    assert load_class_maps(out_dir / "class_maps.safetensors").label_names == SHAPE_CLASSES
    assert (out_dir / "report.html").is_file() and (out_dir / "examples" / "examples.json").is_file()


def test_train_bad_dataset_is_one_line(tmp_path, capsys):
    rc, _, err = cli(
        capsys,
        "train",
        "--model",
        "test_resnet",
        "--dataset",
        "/nonexistent/x",
        "--output_dir",
        tmp_path / "t",
        "--report_to",
        "none",
    )
    assert_clean_error(rc, err, tmp_path / "t", r"/nonexistent/x")
    assert list(tmp_path.iterdir()) == []  # the output folder's parents were not made either


# ---------------------------------------------------------------------------------------------
# the real console script (started together: each start imports torch, timm and transformers)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """Start both console-script cases at once; each test waits for its own."""
    script = console_script()
    root = tmp_path_factory.mktemp("console")
    bad = root / "bad.png"
    bad.write_bytes(b"garbage")
    # the parent's matplotlib cache: a child that finds none rebuilds it and, on a loaded machine, warns on stderr
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLCONFIGDIR=plots.matplotlib.get_cachedir())
    offline = dict(env, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")  # read at import: needs a process
    cases = {
        "offline_hub_id": (
            [
                "score",
                "--model",
                "test_resnet",
                "--dataset",
                "no-such-org/no-such-dataset",
                "--output-dir",
                str(root / "offline_hub_id"),
            ],
            offline,
        ),
        "cam_bad_image": (
            ["cam", "--model", "test_resnet", "--image", str(bad), "--output-dir", str(root / "cam_bad_image")],
            env,
        ),
    }
    runs = Runs({name: ([script, *argv], case_env) for name, (argv, case_env) in cases.items()}, root)
    yield lambda name: (*runs.result(name), root / name)
    runs.close()


@pytest.mark.parametrize(
    ("case", "pattern"),
    [("offline_hub_id", "no-such-org/no-such-dataset"), ("cam_bad_image", "bad.png")],
)
def test_console_script_errors_are_one_line(console, case, pattern):
    """The installed ``hf-gazecons``: exit 2, stderr is exactly one ``error:`` line, nothing written."""
    rc, out, err, out_dir = console(case)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{err}"
    assert lines[0].startswith("error: ") and pattern in lines[0]
    assert not out_dir.exists()
    assert_no_staging(out_dir.parent, out_dir.name)
