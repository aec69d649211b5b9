"""Images that cannot be decoded: without ``--skip-bad-images`` the first one stops ``score`` and
``train`` with one error line naming its file; with it they are left out and recorded, and the
figures are those of a run on the data without them. The three kinds a folder holds in practice:
a truncated JPEG, a zero-byte file and a text file named ``.jpg``."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from console import run_in_process as cli
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from tiny import random_test_resnet, without_times

from hf_gazecons.data import BadImage, drop_bad_images, load_image_dataset
from hf_gazecons.errors import DataError
from hf_gazecons.models import save_model
from hf_gazecons.preprocessing import plain_preprocessing

SIZE = 48
CLASSES = ["cat", "dog"]


def _jpeg(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


_RNG = np.random.default_rng(0)
_TRUNCATED = _jpeg(_RNG)
BAD = {  # kind -> (file name, class folder, content)
    "truncated": ("truncated.jpg", "cat", _TRUNCATED[: len(_TRUNCATED) // 2]),
    "zero-byte": ("empty.jpg", "dog", b""),
    "text": ("text.jpg", "dog", b"a text file, not a picture\n"),
}


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """``clean``: train/ and validation/, 3 JPEGs per class; ``all-bad``: the same plus the three bad
    files in both splits; one folder per bad kind with that file in validation/ only."""
    root, rng = tmp_path_factory.mktemp("bad_images"), np.random.default_rng(1)
    clean = root / "clean"
    for split in ("train", "validation"):
        for name in CLASSES:
            (clean / split / name).mkdir(parents=True)
            for i in range(3):
                (clean / split / name / f"{name}_{i}.jpg").write_bytes(_jpeg(rng))
    folders = {"clean": clean}
    for kind, splits in [("all-bad", ("train", "validation")), *((kind, ("validation",)) for kind in BAD)]:
        folders[kind] = shutil.copytree(clean, root / kind)
        for split in splits:
            for file, name, content in BAD.values() if kind == "all-bad" else [BAD[kind]]:
                (folders[kind] / split / name / file).write_bytes(content)
    return folders


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "cats"
    save_model(random_test_resnet(CLASSES, SIZE), path)
    return path


def error_line(rc: int, err: str) -> str:
    assert rc == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, err
    return lines[-1]


def row_of(folder: Path, split: str, file: str) -> int:
    rows = load_image_dataset(str(folder), split).cast_column("image", Image(decode=False))["image"]
    return next(i for i, image in enumerate(rows) if image["path"].endswith(f"/{file}"))


# ---------------------------------------------------------------------------------------------
# without the option: the first broken image stops the run, named in one line
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "workers"), [("truncated", 0), ("zero-byte", 0), ("text", 0), ("truncated", 2)])
def test_score_without_the_option_names_the_broken_file(kind, workers, folders, model_dir, tmp_path, capsys):
    """Also from a loader worker, whose error torch wraps in the worker's traceback."""
    out_dir = tmp_path / "out"
    argv = ("score", "--model", model_dir, "--dataset", folders[kind], "--num-workers", str(workers))
    line = error_line(*cli(capsys, *argv, "--output-dir", out_dir)[::2])
    file, name, _ = BAD[kind]
    index = row_of(folders[kind], "validation", file)
    assert re.fullmatch(rf"error: image {index} of the validation split .*cannot be read: .+", line), line
    assert str(folders[kind] / "validation" / name / file) in line
    assert not out_dir.exists() and not list(tmp_path.glob(".out-*"))


def test_train_without_the_option_names_the_broken_file_and_leaves_no_folder(folders, tmp_path, capsys):
    out_dir = tmp_path / "trained"
    rc, _, err = cli(
        capsys, "train", "--model", "test_resnet", "--dataset", folders["text"], "--image_size", str(SIZE),
        "--num_train_epochs", "1", "--report_to", "none", "--disable_tqdm", "true", "--output_dir", out_dir,
    )  # fmt: skip
    line = error_line(rc, err)
    assert "cannot be read" in line and str(folders["text"] / "validation" / "dog" / "text.jpg") in line
    assert not out_dir.exists()


# ---------------------------------------------------------------------------------------------
# with the option: left out, recorded, and the figures of the folder without them
# ---------------------------------------------------------------------------------------------
def test_score_skips_records_and_scores_like_the_folder_without_them(folders, model_dir, tmp_path, capsys):
    common = ("score", "--model", model_dir, "--batch-size", "4")
    rc, out, err = cli(
        capsys, *common, "--dataset", folders["all-bad"], "--skip-bad-images", "--max-bad-image-share", "0.5",
        "--num-workers", "2", "--output-dir", tmp_path / "skipped",
    )  # fmt: skip
    assert rc == 0, err
    assert re.search(r"^samples 6  skipped 3 unreadable  correct \d+", out, re.M), out
    rc, _, err = cli(capsys, *common, "--dataset", folders["clean"], "--output-dir", tmp_path / "clean")
    assert rc == 0, err
    skipped, clean = (json.loads((tmp_path / n / "consistency.json").read_text()) for n in ("skipped", "clean"))
    recorded = skipped.pop("skipped_images")
    expected = sorted(
        (row_of(folders["all-bad"], "validation", file), str(folders["all-bad"] / "validation" / name / file))
        for file, name, _ in BAD.values()
    )
    assert [(r["index"], r["path"]) for r in recorded] == expected
    reasons = {Path(r["path"]).name: r["reason"] for r in recorded}
    assert reasons["truncated.jpg"].startswith("image file is truncated")
    assert reasons["empty.jpg"].startswith("cannot identify image file") and "empty.jpg" in reasons["empty.jpg"]
    assert reasons["text.jpg"].startswith("cannot identify image file") and "text.jpg" in reasons["text.jpg"]
    assert clean.pop("skipped_images") == []
    assert skipped.pop("dataset") == str(folders["all-bad"]) and clean.pop("dataset") == str(folders["clean"])
    assert skipped == clean and clean["n_samples"] == 6  # every figure, exactly


def test_score_fails_above_the_share_of_broken_images(folders, model_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ("score", "--model", model_dir, "--dataset", folders["all-bad"], "--skip-bad-images")
    line = error_line(*cli(capsys, *argv, "--output-dir", out_dir)[::2])  # default: 1 %
    assert line.startswith("error: 3 of 9 images of the validation split cannot be read (33.3%, more than ")
    assert "--max-bad-image-share 0.01" in line and "truncated.jpg" in line
    assert not out_dir.exists()


def test_train_skips_records_and_trains_like_the_folder_without_them(folders, tmp_path, capsys):
    def train(folder: Path, out_dir: Path, *options: str) -> tuple[dict, bytes, str]:
        rc, out, err = cli(
            capsys, "train", "--model", "test_resnet", "--dataset", folder, "--image_size", str(SIZE),
            "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--lambda_max", "5", "--t0", "0",
            "--t1", "1", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
            "--output_dir", out_dir, *options,
        )  # fmt: skip
        assert rc == 0, err
        results = json.loads((out_dir / "results.json").read_text())
        return results, (out_dir / "model.safetensors").read_bytes(), out.strip().splitlines()[-1]

    skipped, weights, line = train(
        folders["all-bad"], tmp_path / "skipped", "--skip_bad_images", "--max_bad_image_share", "0.5"
    )
    clean, clean_weights, _ = train(folders["clean"], tmp_path / "clean")
    assert "  skipped 6 unreadable images  -> " in line
    recorded = skipped.pop("skipped_images")
    assert sorted(recorded) == ["eval", "train"]  # no test split in the folder
    for role, split in (("train", "train"), ("eval", "validation")):
        paths = [str(folders["all-bad"] / split / name / file) for file, name, _ in BAD.values()]
        assert sorted(r["path"] for r in recorded[role]) == sorted(paths)
        indices = sorted(row_of(folders["all-bad"], split, Path(path).name) for path in paths)
        assert [r["index"] for r in recorded[role]] == indices
    assert clean.pop("skipped_images") == {}
    assert skipped["config"].pop("dataset") == str(folders["all-bad"]) and clean["config"].pop("dataset")
    assert without_times(skipped) == without_times(clean) and weights == clean_weights


# ---------------------------------------------------------------------------------------------
# options that do not go together, and the library function
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--max-bad-image-share", "0.1"), "--max-bad-image-share needs --skip-bad-images"),
        (("--skip-bad-images", "--streaming"), "would read a stream twice"),
    ],
)
def test_score_options_that_do_not_go_together(options, message, folders, tmp_path, capsys):
    argv = ("score", "--model", "test_resnet", "--dataset", folders["clean"], *options)
    line = error_line(*cli(capsys, *argv, "--output-dir", tmp_path / "out")[::2])
    assert message in line and not (tmp_path / "out").exists()


def test_train_share_without_the_option_is_a_usage_error(folders, tmp_path, capsys):
    rc, _, err = cli(capsys, "train", "--dataset", folders["clean"], "--max_bad_image_share", "0.1",
                     "--output_dir", tmp_path / "out")  # fmt: skip
    assert "--max_bad_image_share needs --skip_bad_images" in error_line(rc, err) and not (tmp_path / "out").exists()


def test_drop_bad_images_on_stored_bytes_and_the_share_limit():
    """Images stored as bytes have no path; the decoder's reason names no memory address (it would
    differ between two runs). A share equal to the limit passes, one above it fails."""
    good = [_jpeg(np.random.default_rng(i)) for i in range(3)]
    features = Features({"image": Image(), "label": ClassLabel(names=CLASSES)})
    rows = [{"bytes": b, "path": None} for b in [good[0], b"not an image", *good[1:]]]
    dataset = Dataset.from_dict({"image": rows, "label": [0, 1, 0, 1]}, features=features)
    kept, bad = drop_bad_images(dataset, plain_preprocessing(SIZE), max_share=0.25, progress=False)
    assert bad == [BadImage(1, None, "cannot identify image file the stored bytes")]
    assert kept["label"] == [0, 0, 1] and len(kept) == 3
    with pytest.raises(DataError, match=r"^1 of 4 images of the data set cannot be read \(25\.0%, more than "):
        drop_bad_images(dataset, plain_preprocessing(SIZE), max_share=0.2, progress=False)
    assert drop_bad_images(dataset.select([0, 2, 3]), plain_preprocessing(SIZE), progress=False)[1] == []
