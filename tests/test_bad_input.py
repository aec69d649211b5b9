"""Bad input, as a new user gives it, through the real command line (issue: fail loudly, never silently wrong).

One table of bad inputs (:data:`ERRORS`): each must end with a non-zero exit (2 for a usage error,
1 for a run that failed), exactly one line on stderr starting with ``error:`` that says what is
wrong, no traceback, and nothing new in the file system (no output folder, no half-written one,
no parent folders made on the way). They run in-process through ``hf_gazecons.cli.main.main``;
what depends on the process (the Hub's retries and log handlers, the speed of ``train --help``,
several processes) runs the console script or ``accelerate launch`` in a subprocess.

Inputs that used to give a silently wrong result now fail, or warn and record: a non-finite loss,
several processes without a process group, classes matched by position, random weights. The
tests of the outputs a run writes (strict JSON, permissions, pictures, model card) are at the end.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from console import Runs, console_script
from PIL import Image as PILImage
from tiny import random_test_resnet

from hf_gazecons.cli.main import main
from hf_gazecons.data import ImageClassificationDataset, load_image_dataset
from hf_gazecons.hub import model_card
from hf_gazecons.jsonio import write_json
from hf_gazecons.models import load_model, save_model
from hf_gazecons.plots import class_means_figure, learning_curves_figure
from hf_gazecons.run_record import RunConfig, RunResults
from hf_gazecons.variants import VARIANTS

REPO = Path(__file__).resolve().parents[1]
SIZE = 48
SHAPES = f"builtin:shapes?num_classes=3&size={SIZE}&n_train=4&n_val=3&n_test=2"  # 12 train, 9 validation
SHAPES2 = f"builtin:shapes?num_classes=2&size={SIZE}&n_train=4&n_val=3&n_test=2"
SHAPES4 = ["circle", "square", "triangle", "cross"]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there
TRAIN = (
    "train", "--model", "test_resnet", "--dataset", SHAPES, "--image_size", str(SIZE),
    "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--disable_tqdm", "true",
    "--output_dir", "{out}",
)  # fmt: skip
SCORE = ("score", "--model", "{models}/shapes3", "--dataset", SHAPES, "--output-dir", "{out}")
SCORE_DIGITS = ("score", "--model", "{models}/digits3", "--dataset", SHAPES, "--output-dir", "{out}")
CAM = ("cam", "--model", "{models}/shapes3", "--image", "{data}/a.png", "--output-dir", "{out}")


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    error: str  # a regex the one error line must match
    rc: int = 2
    setup: str | None = None  # a name in SETUPS, run in the case's folder first


SETUPS = {
    "out-is-a-file": lambda case: (case / "out").write_text("mine"),
    "out-not-empty": lambda case: ((case / "out").mkdir(), (case / "out" / "keep.txt").write_text("mine")),
    "out-under-a-file": lambda case: (case / "file").write_text("mine"),
}


def _variants_pattern() -> str:
    return ".*".join(re.escape(repr(v)) for v in VARIANTS)  # the choices come from hf_gazecons.variants


ERRORS = [
    # 1. a non-finite loss stops the run, naming the step; nothing is written or published
    Case("train-lambda-max-nan", (*TRAIN, "--lambda_max", "nan"), r"--lambda_max must be a finite number, got nan"),
    Case("train-lambda-max-inf", (*TRAIN, "--lambda_max", "inf"), r"--lambda_max must be a finite number"),
    Case("train-loss-turns-nan", (*TRAIN, "--learning_rate", "1e30"), r"training loss is \S+ at step [2-9]\b", rc=1),
    # 3. classes are matched by name; what does not match is an error listing both sets
    Case(
        "score-no-class-name-matches",
        SCORE_DIGITS,
        r"none of the data set's classes \['circle', 'square', 'triangle'\] is one of the model's 3 classes "
        r"\['0', '1', '2'\].*--label-map",
    ),
    Case(
        "score-some-class-names-unmatched",
        ("score", "--model", "{models}/shapes4", "--dataset", "{data}/partial", "--output-dir", "{out}"),
        r"classes \['banana'\] are not among the model's 4 classes \['circle', 'square', 'triangle', 'cross'\]",
    ),
    Case("score-label-map-unknown-class", (*SCORE_DIGITS, "--label-map", "circel=0"), r"'circel'.*\['circle'"),
    Case(
        "score-label-map-unknown-output",
        (*SCORE_DIGITS, "--label-map", "circle=7,square=1,triangle=2"),
        r"maps to \['7'\].*\['0', '1', '2'\]",
    ),
    Case("score-label-map-syntax", (*SCORE_DIGITS, "--label-map", "circle"), r"--label-map.*DATA=MODEL"),
    # 4. score needs a data set; --pretrained weights that cannot be had are an error, not random weights
    Case("score-without-dataset", ("score", "--model", "test_resnet", "--output-dir", "{out}"), r"--dataset"),
    Case(
        "score-pretrained-not-on-the-hub",
        ("score", "--model", "test_efficientnet", "--pretrained", "--dataset", SHAPES, "--output-dir", "{out}"),
        r"cannot load timm's pretrained weights of 'test_efficientnet': the Hub has no timm/test_efficientnet",
    ),
    # 5. every numeric and choice option, before anything is loaded
    Case("score-image-size-0", (*SCORE, "--image-size", "0"), r"--image-size.*positive integer, got '0'"),
    Case("score-image-size-negative", (*SCORE, "--image-size=-5"), r"--image-size.*positive integer, got '-5'"),
    Case("score-image-size-not-a-number", (*SCORE, "--image-size", "1e3"), r"positive integer, got '1e3'"),
    Case("score-grid-0-0", (*SCORE, "--grid", "0", "0"), r"--grid.*positive integer"),
    Case("score-batch-size-0", (*SCORE, "--batch-size", "0"), r"--batch-size.*positive integer"),
    Case("score-max-samples-0", (*SCORE, "--max-samples", "0"), r"--max-samples.*positive integer"),
    Case("score-num-workers-negative", (*SCORE, "--num-workers=-1"), r"--num-workers.*integer >= 0"),
    Case("score-variant-typo", (*SCORE, "--variant", "papr"), r"invalid choice: 'papr'.*" + _variants_pattern()),
    Case("score-pointing-tolerance-negative", (*SCORE, "--pointing-tolerance=-1"), r"--pointing-tolerance.*>= 0"),
    Case("score-faithfulness-typo", (*SCORE, "--faithfulness", "rod"), r"invalid choice: 'rod'.*'deletion', 'road'"),
    Case("score-option-typo", (*SCORE[:-2], "--outptu-dir", "{out}"), r"did you mean --output-dir\?"),
    Case("cam-image-size-0", (*CAM, "--image-size", "0"), r"--image-size.*positive integer"),
    Case("demo-epochs-0", ("demo", "--epochs", "0", "--output-dir", "{out}"), r"--epochs.*positive integer"),
    Case("demo-lambda-max-nan", ("demo", "--lambda-max", "nan", "--output-dir", "{out}"), r"finite number, got 'nan'"),
    Case("sweep-preset-typo", ("sweep", "--preset", "smoek", "--output-dir", "{out}"), r"invalid choice: 'smoek'"),
    Case("sweep-ema-alpha-2", ("sweep", "--ema-alpha", "2", "--output-dir", "{out}"), r"--ema-alpha.*\[0, 1\)"),
    Case("sweep-t1-before-t0", ("sweep", "--t0", "5", "--t1", "2", "--output-dir", "{out}"), r"--t1 \(2\).*--t0 \(5\)"),
    Case("train-variant-typo", (*TRAIN, "--variant", "papr"), r"invalid choice: 'papr'.*" + _variants_pattern()),
    # the CAM method: names from the registry; the scoring-only ones cannot train
    Case(
        "score-cam-method-typo",
        (*SCORE, "--cam-method", "gradcam++"),
        r"--cam-method.*unknown CAM method 'gradcam\+\+'; choose one of gradcam, gradcampp, .*eigencam",
    ),
    Case("cam-cam-method-typo", (*CAM, "--cam-method", "layer"), r"unknown CAM method 'layer'"),
    Case(
        "demo-cam-method-scoring-only",
        ("demo", "--cam-method", "scorecam", "--output-dir", "{out}"),
        r"scorecam \(Score-CAM\) is scoring only.*train with one of gradcam, gradcampp",
    ),
    Case(
        "sweep-cam-method-scoring-only",
        ("sweep", "--cam-method", "eigencam", "--output-dir", "{out}"),
        r"eigencam \(Eigen-CAM\) is scoring only",
    ),
    Case("sweep-cam-method-all", ("sweep", "--cam-method", "all", "--output-dir", "{out}"), r"unknown CAM method 'all'"),
    Case("train-cam-method-typo", (*TRAIN, "--cam_method", "gradcam++"), r"invalid choice: 'gradcam\+\+'"),
    Case(
        "train-cam-method-scoring-only",
        (*TRAIN, "--cam_method", "scorecam"),
        r"--cam_method: scorecam \(Score-CAM\) is scoring only: its maps cannot be differentiated",
    ),
    Case("train-per-sample-typo", (*TRAIN, "--per_sample", "held"), r"invalid choice: 'held'.*held_stats.*exact"),
    Case(
        "sweep-per-sample-typo",
        ("sweep", "--per-sample", "loop", "--output-dir", "{out}"),
        r"invalid choice: 'loop'.*held_stats.*exact",
    ),
    Case("train-max-train-samples-0", (*TRAIN, "--max_train_samples", "0"), r"--max_train_samples.*positive"),
    Case("train-image-size-negative", (*TRAIN, "--image_size=-5"), r"--image_size must be a positive integer"),
    Case("train-ema-alpha-2", (*TRAIN, "--ema_alpha", "2"), r"--ema_alpha must be a number in \[0, 1\), got 2"),
    Case("train-t1-before-t0", (*TRAIN, "--t0", "5", "--t1", "2"), r"--t1 \(2\) must be greater than --t0 \(5\)"),
    Case("train-option-typo", (*TRAIN, "--lamda_max", "5"), r"unrecognized.*--lamda_max.*did you mean --lambda_max\?"),
    Case("train-option-not-a-number", (*TRAIN, "--t0", "abc"), r"--t0.*invalid int value: 'abc'"),
    Case("train-batch-size-0", (*TRAIN, "--per_device_train_batch_size", "0"), r"--per_device_train_batch_size"),
    Case("train-epochs-0", (*TRAIN, "--num_train_epochs", "0"), r"--num_train_epochs must be a finite number > 0"),
    Case("train-seed-negative", (*TRAIN, "--seed=-1"), r"--seed must be an integer in \[0, 2\*\*32\)"),
    Case("train-seed-huge", (*TRAIN, "--seed", str(2**40)), r"--seed must be an integer in"),
    # 6. output folders
    Case("score-output-is-a-file", SCORE, r"'\S*out' is a file", setup="out-is-a-file"),
    Case("score-output-dir-empty-string", (*SCORE[:-1], ""), r"--output-dir must name a folder, got ''"),
    Case("train-without-output-dir", TRAIN[:-2], r"required: --output_dir"),  # not ./trainer_output
    Case("score-output-not-empty", SCORE, r"not empty", setup="out-not-empty"),
    Case(
        "score-output-under-a-file",
        (*SCORE[:-1], "{case}/file/out"),
        r"cannot be created.*is a file",
        setup="out-under-a-file",
    ),
    Case(  # fails while scoring, with the output folder's parents already made: they go again
        "score-failure-makes-no-parents",
        ("score", "--model", "{models}/pets2", "--dataset", "{data}/broken", "--output-dir", "{case}/a/b/out"),
        r"broken\.png",
    ),
    Case("cam-output-is-a-file", CAM, r"is a file", setup="out-is-a-file"),
    Case("train-output-is-a-file", TRAIN, r"--output_dir '\S*out' is a file", setup="out-is-a-file"),
    Case(
        "train-output-not-empty",
        TRAIN,
        r"'\S*out' is not empty; pass --overwrite_output_dir true.*another --output_dir",
        setup="out-not-empty",
    ),
    # 7. resume
    Case(
        "train-resume-without-checkpoints",
        (*TRAIN, "--resume_from_checkpoint", "true"),
        r"--resume_from_checkpoint true: no complete checkpoint-N folder in '\S*out'",
    ),
    Case(
        "train-resume-missing-path",
        (*TRAIN, "--resume_from_checkpoint", "{case}/nope/checkpoint-3"),
        r"--resume_from_checkpoint '\S*nope/checkpoint-3': no such folder",
    ),
    Case(
        "train-resume-another-class-count",
        (*TRAIN[:4], SHAPES2, *TRAIN[5:], "--resume_from_checkpoint", "{trained}/checkpoint-3"),
        r"holds another model's weights.*fc\.(weight|bias) is \[3(, \d+)?\] there but \[2(, \d+)?\] here",
    ),
    # 8. publishing is checked before training
    Case(
        "train-push-without-token",
        (*TRAIN, "--push_to_hub", "--hub_model_id", "org/x"),
        r"cannot push to org/x: no Hub token; set HF_TOKEN",
    ),
    Case(
        "train-push-to-another-namespace",
        (*TRAIN, "--push_to_hub", "--hub_model_id", "someone-else/x", "--hub_token", "hf_test_token"),
        r"belongs to 'hub-user'.*not to 'someone-else'",
    ),
    Case("push-without-folder", ("push", "--repo-id", "org/x"), r"name the training output folder once"),
    # 9. options whose use needs something else
    Case("train-report-to-uninstalled", (*TRAIN, "--report_to", "wandb"), r"--report_to wandb.*pip install wandb"),
    Case("train-report-to-unknown", (*TRAIN, "--report_to", "wandbb"), r"unknown integration; choose from .*wandb"),
    Case("train-eval-strategy-no", (*TRAIN, "--eval_strategy", "no"), r"reduce_lr_on_plateau.*--lr_scheduler_type"),
    # 10. messages with context
    Case(
        "score-corrupt-image",
        ("score", "--model", "{models}/pets2", "--dataset", "{data}/broken", "--output-dir", "{out}"),
        r"image \d+ of the validation split cannot be read: .*broken\.png",
    ),
    Case(
        "score-one-class-folder",
        ("score", "--model", "test_resnet", "--dataset", "{data}/one_class", "--output-dir", "{out}"),
        r"has one class \(the sub-folder 'cat'\): a classifier needs at least 2 classes",
    ),
    Case(
        "train-one-class-folder",
        (*TRAIN[:4], "{data}/one_class", *TRAIN[5:]),
        r"has one class \(the sub-folder 'cat'\)",
    ),
    Case(
        "score-unknown-builtin",
        ("score", "--model", "test_resnet", "--dataset", "builtin:shape", "--output-dir", "{out}"),
        r"unknown built-in data set 'shape'",
    ),
]


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def root(tmp_path_factory):
    """Shared inputs; the datasets cache and the help cache live here too, outside every case folder."""
    import datasets

    root = tmp_path_factory.mktemp("bad_input")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", root / "hf-datasets-cache")
        patch.setenv("XDG_CACHE_HOME", str(root / "xdg-cache"))
        yield root


def _image_folder(path: Path, classes: list[str], per_class: int = 2, splits=("train", "validation")) -> Path:
    rng = np.random.default_rng(len(classes))
    for split in splits:
        for name in classes:
            (path / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                PILImage.fromarray(pixels).save(path / split / name / f"{name}_{i}.png")
    return path


@pytest.fixture(scope="module")
def paths(root):
    models, data = root / "models", root / "data"
    save_model(random_test_resnet(["circle", "square", "triangle"], SIZE), models / "shapes3")
    save_model(random_test_resnet(SHAPES4, SIZE), models / "shapes4")
    save_model(random_test_resnet(["0", "1", "2"], SIZE), models / "digits3")
    save_model(random_test_resnet(["cat", "dog"], SIZE), models / "pets2")
    _image_folder(data / "subset", ["square", "cross"])  # a subset of shapes4, not at its start
    _image_folder(data / "partial", ["banana", "square"])
    _image_folder(data / "one_class", ["cat"], splits=("train",))
    _image_folder(data / "broken", ["cat", "dog"], per_class=2)
    (data / "broken" / "validation" / "dog" / "broken.png").write_bytes(b"this is not a png")
    load_image_dataset(SHAPES, "test")[0]["image"].save(data / "a.png")
    return {"models": str(models), "data": str(data)}


@pytest.fixture(scope="module")
def trained(root, paths):
    """A 1-epoch run on SHAPES (3 classes, 12 images, batch 4: checkpoint-3), for the resume cases."""
    out = root / "trained"
    rc, _, _ = cli(None, *fill(TRAIN, {"out": str(out)}))
    assert rc == 0
    assert (out / "checkpoint-3").is_dir()
    return out


def fill(argv, values: dict[str, str]) -> list[str]:
    return [part.format(**values) for part in argv]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``hf-gazecons argv`` in-process: (exit status, stdout, stderr); argparse's exits count as returns."""
    if capsys is not None:
        capsys.readouterr()
    try:
        rc = main(list(argv))
    except SystemExit as exit_:
        rc = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return rc, out, err


def snapshot(*folders: Path) -> set[str]:
    """Every path under ``folders`` (files and folders, hidden ones included)."""
    return {str(p) for folder in folders if folder.exists() for p in folder.rglob("*")}


def error_line(rc: int, err: str, expected_rc: int = 2) -> str:
    """The one ``error:`` line of a failed command (no traceback, nothing else on stderr)."""
    assert rc == expected_rc, f"exit {rc}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr is not one line:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# every bad input: one line, the right status, nothing written
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ERRORS, ids=[case.id for case in ERRORS])
def test_bad_input_is_one_line_and_writes_nothing(case, paths, trained, local_hub, tmp_path, capsys):
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    if case.setup:
        SETUPS[case.setup](case_dir)
    before = snapshot(case_dir, trained)
    argv = fill(case.argv, {**paths, "out": str(case_dir / "out"), "case": str(case_dir), "trained": str(trained)})
    rc, out, err = cli(capsys, *argv)
    line = error_line(rc, err, case.rc)
    assert re.search(case.error, line), f"{case.error!r} not in {line!r}"
    assert snapshot(case_dir, trained) == before, "the command left files behind or changed them"
    assert "accuracy" not in out  # no result was reported either


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot create anything in: a read-only one, or, for root (whom file modes
    do not stop), a place of the kernel's where even root may not make folders."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    try:
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
    except OSError:
        yield Path("/sys")
    else:
        pytest.skip("no unwritable folder found for root")


@pytest.mark.parametrize("command", [SCORE, TRAIN, CAM], ids=["score", "train", "cam"])
def test_output_dir_in_a_folder_that_cannot_be_written(command, unwritable, paths, capsys):
    out = unwritable / "hf-gazecons-test-out"
    rc, _, err = cli(capsys, *fill(command, {**paths, "out": str(out)}))
    line = error_line(rc, err)
    assert re.search(r"output.dir '\S+' cannot be written", line), line
    assert not out.exists()


def test_the_table_covers_every_command():
    assert len(ERRORS) >= 30
    assert len({case.id for case in ERRORS}) == len(ERRORS)
    assert {case.argv[0] for case in ERRORS} == {"score", "cam", "demo", "sweep", "train", "push"}
    assert {case.rc for case in ERRORS} == {1, 2}  # failed runs as well as bad input


# ---------------------------------------------------------------------------------------------
# what used to be silently wrong now works, or warns and records
# ---------------------------------------------------------------------------------------------
def _predictions(model_dir: str, dataset) -> list[int]:
    """The plain way: the model's argmax over its own preprocessing of every image."""
    loaded = load_model(model_dir)
    items = ImageClassificationDataset(dataset, loaded.preprocessing, mode=loaded.preprocessing.mode)
    loaded.model.eval()
    with torch.no_grad():
        logits = loaded.model(torch.stack([items[i]["pixel_values"] for i in range(len(items))]))
    return logits.argmax(dim=1).tolist()


def test_score_a_subset_of_the_models_classes_maps_by_name(paths, tmp_path, capsys):
    """Data set classes [cross, square] (labels 0, 1) of a model with [circle, square, triangle, cross]:
    label 0 must be scored as the model's output 3, label 1 as output 1."""
    out = tmp_path / "out"
    rc, stdout, err = cli(
        capsys, "score", "--model", f"{paths['models']}/shapes4", "--dataset", f"{paths['data']}/subset",
        "--output-dir", str(out),
    )  # fmt: skip
    assert rc == 0, err
    result = json.loads((out / "consistency.json").read_text())
    assert list(result["per_class"]) == ["cross", "square"]
    data = load_image_dataset(f"{paths['data']}/subset", "validation")
    predicted = _predictions(f"{paths['models']}/shapes4", data)
    model_index = {"cross": 3, "square": 1}
    names = data.features["label"].names
    for name in ("cross", "square"):
        rows = [i for i, label in enumerate(data["label"]) if names[label] == name]
        correct = sum(predicted[i] == model_index[name] for i in rows)
        assert result["per_class"][name]["n_samples"] == len(rows) == 2
        assert result["per_class"][name]["n_correct"] == correct
    assert result["n_correct"] == sum(e["n_correct"] for e in result["per_class"].values())
    assert result["accuracy"] == pytest.approx(result["n_correct"] / 4)


def test_score_with_a_label_map(paths, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = cli(
        capsys, *fill(SCORE_DIGITS, {**paths, "out": str(out)}), "--label_map", "circle=0,square=1,triangle=2"
    )
    assert rc == 0, err
    result = json.loads((out / "consistency.json").read_text())
    assert list(result["per_class"]) == ["0", "1", "2"]
    data = load_image_dataset(SHAPES, "validation")
    predicted = _predictions(f"{paths['models']}/digits3", data)
    for label, name in enumerate(["0", "1", "2"]):  # shapes label i is digits output i here
        rows = [i for i, y in enumerate(data["label"]) if y == label]
        assert result["per_class"][name]["n_samples"] == len(rows)
        assert result["per_class"][name]["n_correct"] == sum(predicted[i] == label for i in rows)


def test_score_random_weights_warns_and_records(paths, tmp_path, capsys):
    out = tmp_path / "random"
    rc, _, err = cli(capsys, "score", "--model", "test_resnet", "--image-size", str(SIZE), "--dataset", SHAPES,
                     "--output-dir", str(out))  # fmt: skip
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:") and "random weights" in line]
    assert len(warnings) == 1, err
    assert json.loads((out / "consistency.json").read_text())["random_weights"] is True
    out = tmp_path / "trained"
    rc, _, err = cli(capsys, *fill(SCORE, {**paths, "out": str(out)}))
    assert rc == 0, err
    assert "random weights" not in err
    assert json.loads((out / "consistency.json").read_text())["random_weights"] is False


def test_score_pretrained_loads_timms_weights(paths, local_hub, tmp_path, capsys):
    """``--pretrained`` takes timm's weights (from the Hub: here the local one) and keeps their head;
    its classes (0..999) are mapped to the data set's with --label-map."""
    torch.manual_seed(3)
    model = timm.create_model("test_resnet")
    published = tmp_path / "published"
    timm.models.save_for_hf(model, str(published), safe_serialization=True)
    repo = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    local_hub.repos.pop(("model", repo), None)
    local_hub.create_repo(repo, files={p.name: p.read_bytes() for p in published.iterdir()})
    out = tmp_path / "out"
    rc, _, err = cli(
        capsys, "score", "--model", "test_resnet", "--pretrained", "--image-size", str(SIZE), "--dataset", SHAPES,
        "--label-map", "circle=0,square=1,triangle=2", "--output-dir", str(out),
    )  # fmt: skip
    assert rc == 0, err
    assert "random weights" not in err
    result = json.loads((out / "consistency.json").read_text())
    assert result["random_weights"] is False and list(result["per_class"]) == ["0", "1", "2"]
    loaded = load_model("test_resnet", pretrained=True, image_size=SIZE)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_cam_with_two_images_of_the_same_name(paths, tmp_path, capsys):
    for folder, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
        (tmp_path / folder).mkdir()
        PILImage.new("RGB", (SIZE, SIZE), colour).save(tmp_path / folder / "x.png")
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "cam", "--model", f"{paths['models']}/shapes3", "--image", str(tmp_path / "a/x.png"),
                          str(tmp_path / "b/x.png"), "--output-dir", str(out))  # fmt: skip
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["x-2_cam.png", "x_cam.png"]
    assert (out / "x_cam.png").read_bytes() != (out / "x-2_cam.png").read_bytes()
    assert stdout.splitlines()[1].endswith("-> x-2_cam.png")


def test_both_spellings_of_output_dir_and_unicode_paths(paths, tmp_path, capsys):
    out = tmp_path / "résumé 出力"
    rc, _, err = cli(capsys, *fill(SCORE[:-2], paths), "--output_dir", str(out), "--max_samples", "3")
    assert rc == 0, err
    assert json.loads((out / "consistency.json").read_text())["n_samples"] == 3


def test_version(capsys):
    rc, out, _ = cli(capsys, "--version")
    assert rc == 0
    assert re.match(r"hf-gazecons \d+\.\d+\.\d+ \(torch [\d.]+.*transformers [\d.]+", out)


# ---------------------------------------------------------------------------------------------
# train: what works now
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def overwritten(root, paths):
    """A run into a non-empty folder with --overwrite_output_dir true (umask 022, for the permissions)."""
    out = root / "overwritten"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    umask = os.umask(0o022)
    try:
        rc, _, _ = cli(None, *fill(TRAIN, {"out": str(out)}), "--overwrite_output_dir", "true", "--lambda_max", "5",
                       "--t0", "0", "--t1", "1")  # fmt: skip
    finally:
        os.umask(umask)
    assert rc == 0
    return out


def test_train_overwrite_output_dir_keeps_other_files(overwritten):
    assert (overwritten / "notes.txt").read_text() == "mine"
    for name in ("model.safetensors", "results.json", "README.md", "class_means.png", "learning_curves.png"):
        assert (overwritten / name).is_file(), name
    assert not [p.name for p in overwritten.iterdir() if p.name.startswith(".")], "a staging folder was left"


def test_train_resume_true_takes_the_last_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    (out / "results.json").unlink()
    rc, _, err = cli(capsys, *fill(TRAIN, {"out": str(out)}), "--num_train_epochs", "2", "--resume_from_checkpoint",
                     "true")  # fmt: skip
    assert rc == 0, err
    history = json.loads((out / "results.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 1 from the checkpoint's log, epoch 2 trained now
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]


def test_train_without_evaluations_works_with_another_schedule(tmp_path, capsys):
    out = tmp_path / "no-eval"
    rc, stdout, err = cli(capsys, *fill(TRAIN, {"out": str(out)}), "--eval_strategy", "no", "--lr_scheduler_type",
                          "constant", "--save_strategy", "no")  # fmt: skip
    assert rc == 0, err
    results = json.loads((out / "results.json").read_text())
    final = results["final"]
    assert final["eval_accuracy"] is not None  # the final evaluation still runs
    assert stdout.strip().splitlines()[-1].startswith(f"accuracy {final['eval_accuracy']:.4f}  kappa ")
    assert not list(out.glob("checkpoint-*"))  # --save_strategy no


# ---------------------------------------------------------------------------------------------
# several processes (README: accelerate launch --multi_gpu on a machine without GPUs)
# ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available() or not torch.distributed.is_available(), reason="the CPU-only case")
def test_readme_multi_gpu_command_is_one_ddp_run_on_cpu(tmp_path):
    """Without --use_cpu true, the README's command used to run two separate trainings into one folder."""
    out = tmp_path / "ddp"
    data = "builtin:shapes?num_classes=2&size=48&n_train=8&n_val=3&n_test=1"  # 16 training images
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(_free_port()), "scripts/train.py", "--model", "test_resnet", "--dataset", data,
        "--image_size", "48", "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
        "--lambda_max", "5", "--t0", "0", "--t1", "1", "--output_dir", str(out), "--disable_tqdm", "true",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(re.findall(r"^accuracy ", proc.stdout, re.M)) == 1  # one process reports
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["batch_size"] == 8  # 4 per process x 2 processes
    # one DDP run: 16 images / (2 x 4) = 2 steps; two separate runs would each have taken 4
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]


def test_several_processes_without_a_process_group_fail(monkeypatch, tmp_path):
    from hf_gazecons.errors import UsageError
    from hf_gazecons.trainer import GazeConsistencyTrainingArguments
    from hf_gazecons.training_checks import prepare_run

    args = GazeConsistencyTrainingArguments(str(tmp_path / "out"), use_cpu=True)
    assert args.world_size == 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # as a launcher sets it for each process
    with pytest.raises(UsageError, match=r"2 processes were launched .* no process group.*--use_cpu true"):
        prepare_run(args)


# ---------------------------------------------------------------------------------------------
# the console script: the Hub, log handlers, the speed of train --help
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def console(root):
    """Start the subprocess cases together (each start imports torch); each test waits for its own."""
    script = console_script()
    import matplotlib

    # a fresh XDG_CACHE_HOME would make matplotlib rebuild its font cache, which warns on stderr when it
    # takes more than 5 s (a loaded machine): keep this process's, so that stderr is the command's alone
    base = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(root / "console-xdg"),
                MPLCONFIGDIR=matplotlib.get_cachedir())  # fmt: skip
    unreachable = {**base, "HF_ENDPOINT": UNREACHABLE, "HF_HOME": str(root / "console-hf-home")}
    unreachable.pop("HF_HUB_CACHE", None)
    check_imports = (
        "import sys\nfrom hf_gazecons.cli.main import main\n"
        "for command in ('train', 'score'):\n    try:\n        main([command, '--help'])\n    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'timm', 'datasets') if m in sys.modules), file=sys.stderr)"
    )
    cases = {
        "hub-model": ([script, "score", "--model", "some-org/some-model", "--dataset", SHAPES, "--output-dir",
                       str(root / "c-model")], unreachable),
        "hub-dataset": ([script, "score", "--model", "test_resnet", "--dataset", "some-org/some-data",
                         "--output-dir", str(root / "c-data")], unreachable),
        "hub-pretrained": ([script, "score", "--model", "test_resnet", "--pretrained", "--dataset", SHAPES,
                            "--output-dir", str(root / "c-pretrained")], unreachable),
        "train-help": ([script, "train", "--help"], base),
        "score-help": ([script, "score", "--help"], base),  # --variant lists VARIANTS: torch
        "out-of-memory": ([script, "score", "--model", "test_resnet", "--image-size", str(SIZE), "--dataset", SHAPES,
                           "--grid", "20000", "20000", "--output-dir", str(root / "c-oom" / "out")], base),
    }  # fmt: skip

    def limit_memory():  # 20000 x 20000 maps need 14.4 GB a batch: refused under a 10 GB address space
        resource.setrlimit(resource.RLIMIT_AS, (10 * 2**30,) * 2)

    runs = Runs(
        {name: (*case, limit_memory if name == "out-of-memory" else None) for name, case in cases.items()}, root
    )

    def result(name: str) -> tuple[int, str, str]:
        if name == "warm":  # both helps again, from the cache, in a fresh interpreter
            runs.result("train-help"), runs.result("score-help")
            warm = subprocess.run(
                [sys.executable, "-c", check_imports], capture_output=True, text=True, cwd=root, env=base, timeout=120
            )
            return warm.returncode, warm.stdout, warm.stderr
        return runs.result(name)

    yield result
    runs.close()


@pytest.mark.parametrize(
    ("case", "subject"),
    [("hub-model", "model 'some-org/some-model'"), ("hub-dataset", "data set 'some-org/some-data'"),
     ("hub-pretrained", "timm's pretrained weights of 'test_resnet'")],
)  # fmt: skip
def test_unreachable_hub_fails_at_once_in_one_line(console, root, case, subject):
    rc, _, err = console(case)
    line = error_line(rc, err)
    assert f"cannot load {subject}: the Hub ({UNREACHABLE}) cannot be reached" in line
    assert "HF_HUB_OFFLINE=1" in line
    assert "Retrying" not in err  # one request, no retries with backoff
    assert not list(root.glob("c-*"))


def test_out_of_memory_is_one_line(console, root):
    rc, _, err = console("out-of-memory")
    line = error_line(rc, err, expected_rc=1)
    assert "out of memory" in line and "--grid" in line and "nothing was written" in line
    assert not (root / "c-oom").exists()  # neither the output folder nor the parent made for it


def test_ctrl_c_during_training_leaves_no_folder(root):
    """Ctrl-C in the middle of a run without a checkpoint (--save_strategy no): exit 130, one
    error line, and no folder of the run is left."""
    out = root / "ctrl-c" / "new" / "out"
    command = [
        console_script(), *fill(TRAIN, {"out": str(out)}),
        "--num_train_epochs", "1000", "--save_strategy", "no", "--logging_steps", "1",
    ]  # fmt: skip
    # a shell's background job (CI runners may be one) starts with SIGINT ignored, and children
    # inherit that: give the run the default disposition, as an interactive terminal does
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    first_log = process.stdout.readline()  # the first step's log line: training is under way
    assert first_log.startswith("{") and process.poll() is None, first_log
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    # warnings of the run itself (2x2 maps at 48 px, an undefined L_CAM at the first evaluation)
    err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith("warning: "))
    line = error_line(process.returncode, err, expected_rc=130)
    assert "interrupted" in line
    assert not (root / "ctrl-c").exists() or not any((root / "ctrl-c").iterdir())


def test_help_from_the_cache_imports_neither_torch_nor_transformers(console):
    rc, train_help, _ = console("train-help")
    assert rc == 0 and train_help.startswith("usage: hf-gazecons train")
    rc, score_help, _ = console("score-help")
    assert rc == 0 and score_help.startswith("usage: hf-gazecons score")
    rc, again, imported = console("warm")
    assert rc == 0 and again == train_help + score_help
    assert imported.strip() == "[]", imported


def test_library_warnings_print_once(root):
    """huggingface_hub logs through a handler of its own; the CLI's root handler printed each line again."""
    code = (
        "import logging, sys\nfrom hf_gazecons.cli.main import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "import huggingface_hub\nlogging.getLogger('huggingface_hub.file_download').warning('probe warning')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.count("probe warning") == 1, proc.stderr


# ---------------------------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------------------------
def _subparsers():
    from hf_gazecons.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.choices and "score" in a.choices)
    return {name: sub for name, sub in commands.choices.items() if name != "train"}


def test_every_option_has_help_with_its_default():
    import argparse

    from hf_gazecons.cli.train import build_parser as train_parser

    parsers = {**_subparsers(), "train": train_parser()}
    for name, parser in parsers.items():
        text = parser.format_help()
        assert "DemoSettings" not in text and "<function" not in text and " object at 0x" not in text, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            flag = action.nargs == 0
            if not flag and not action.required:
                formatted = parser._get_formatter()._expand_help(action) if name != "train" else action.help
                shown = "default" in formatted or name == "train"  # train: ArgumentDefaultsHelpFormatter adds it
                assert shown, f"{name} {action.option_strings[0]}: the default is not shown"
        if name == "app":  # serves pages, writes no folder
            continue
        for option in ("--output-dir", "--output_dir"):
            assert any(option in action.option_strings for action in parser._actions), (name, option)


def test_demo_help_shows_its_defaults(capsys):
    from hf_gazecons.demo import DemoSettings

    rc, out, _ = cli(capsys, "demo", "--help")
    assert rc == 0
    text = " ".join(out.split())
    for value in (DemoSettings.model, DemoSettings.epochs, DemoSettings.lambda_max, DemoSettings.image_size):
        assert f"(default: {value})" in text


def test_train_help_says_which_transformers_defaults_change(capsys):
    rc, out, _ = cli(capsys, "train", "--help")
    assert rc == 0
    text = " ".join(out.split())
    assert "gazecons default: 0.0001 (the study's Adam learning rate; transformers': 5e-05)" in text
    assert f"--variant {{{','.join(VARIANTS)}}}" in text


# ---------------------------------------------------------------------------------------------
# what the runs write: strict JSON, permissions, pictures, the card
# ---------------------------------------------------------------------------------------------
def _strict_json(path: Path):
    def reject(constant: str):
        raise AssertionError(f"{path.name} holds {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_outputs_are_strict_json(overwritten, tmp_path):
    results = _strict_json(overwritten / "results.json")
    assert results["history"][0]["train_cross_entropy"] is not None  # logged apart from the total loss
    write_json(tmp_path / "x.json", {"kappa": float("nan"), "values": [1.0, float("inf"), (2.0, -math.inf)]})
    assert _strict_json(tmp_path / "x.json") == {"kappa": None, "values": [1.0, None, [2.0, None]]}


def test_output_files_have_the_permissions_of_the_umask(overwritten):
    modes = {str(p.relative_to(overwritten)): stat.S_IMODE(p.stat().st_mode) for p in overwritten.rglob("*")}
    wrong = {
        path: oct(mode)
        for path, mode in modes.items()
        if mode != (0o755 if (overwritten / path).is_dir() else 0o644) and path != "notes.txt"
    }
    assert not wrong, wrong


def test_class_means_wrap_mark_empty_classes_and_have_a_colour_bar():
    import matplotlib.pyplot as plt

    means = torch.rand(20, 5, 5)
    means[[3, 17]] = math.nan  # classes without correct samples
    fig = class_means_figure({"model": means}, [f"class{i}" for i in range(20)])
    try:
        panels = [ax for ax in fig.axes if ax.get_title().startswith("class")]
        assert len(panels) == 20
        rows = {ax.get_subplotspec().rowspan.start for ax in panels}
        columns = {ax.get_subplotspec().colspan.start for ax in panels}
        assert len(rows) == 3 and len(columns) == 8  # 8 to a line, wrapped
        marked = [ax.get_title() for ax in panels if any(t.get_text().startswith("n/a") for t in ax.texts)]
        assert marked == ["class3", "class17"]
        assert all(not ax.images for ax in panels if ax.get_title() in marked)
        drawn = [ax for ax in panels if ax.get_title() not in marked]
        assert all(ax.images[0].get_clim() == (0, 1) for ax in drawn)  # one range, the maps' [0, 1], for all
        (bar,) = [ax for ax in fig.axes if ax.get_ylabel() == "normalised Grad-CAM"]  # the colour bar
        assert bar.get_ylim() == (0, 1)
    finally:
        plt.close(fig)


def test_learning_curves_separate_the_penalty_and_the_cross_entropy():
    import matplotlib.pyplot as plt

    history = [
        {"epoch": e, "train_loss": 1.0 + 50 * p, "train_cross_entropy": 1.0, "train_penalty": p, "lambda": 50.0,
         "eval_loss": 1.1, "eval_accuracy": 0.5, "eval_kappa": 0.2, "eval_gaze_consistency": 0.01}
        for e, p in ((1, 0.002), (2, 0.001), (3, 0.0005))
    ]  # fmt: skip
    fig = learning_curves_figure(history)
    try:
        labels = {line.get_label(): ax for ax in fig.axes for line in ax.get_lines()}
        assert {"train_loss", "train_cross_entropy", "eval_loss"} <= set(labels)
        assert labels["train_penalty"] is not labels["lambda"]  # an axis of its own
        assert labels["train_penalty"].get_ylim()[1] < 0.01 < 50 < labels["lambda"].get_ylim()[1]
        fig.canvas.draw()
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert all(float(t).is_integer() for t in ticks), ticks
    finally:
        plt.close(fig)


def test_model_card_offers_timm_only_where_timm_can_load_it():
    config = RunConfig(
        model="vit", architecture="vit", library="transformers", dataset="builtin:shapes", eval_split="validation",
        label_names=["a", "b"], variant="paper", lambda_max=0.0, t0=2, t1=10, ema_alpha=0.9,
        epochs=1, image_size=[64, 64], channels=3, learning_rate=1e-4, seed=0,
    )  # fmt: skip
    results = RunResults(config=config, final={"eval_accuracy": 0.5})
    assert "timm.create_model" not in str(model_card(results))
    assert "AutoModelForImageClassification" in str(model_card(results))
    config.library = "timm"
    assert "timm.create_model" in str(model_card(results))
