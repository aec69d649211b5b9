"""Same command, same numbers: a command run twice in one process, with the same seed (and so the
same thread count), writes the same outputs. In one process the global random generators have moved
on between the two runs, so whatever a command builds without seeding (a bare architecture's
weights) comes out different the second time and fails these tests.

Checked elsewhere: ``train`` with loader workers ends with the same weights (tests/test_trainer.py),
and on a folder with broken images left out it writes the results and weights of a run on the
folder without them (tests/test_bad_images.py); ``demo`` run twice writes the same results
(tests/test_cli.py); a sweep and its two shards write the same ``runs.csv`` and
``correlation.csv`` (tests/test_sweep.py). Only the fields that name a time differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from console import run_in_process as cli

from hf_gazecons.data import load_image_dataset
from hf_gazecons.sanity import cascading_randomization

SIZE = 48
SHAPES = f"builtin:shapes?num_classes=3&size={SIZE}&n_train=4&n_val=6&n_test=2"


def score(capsys, out_dir: Path, *options: str) -> dict:
    argv = ("score", "--model", "test_resnet", "--image-size", str(SIZE), "--dataset", SHAPES, *options)
    rc, _, err = cli(capsys, *argv, "--output-dir", out_dir)
    assert rc == 0, err
    return json.loads((out_dir / "consistency.json").read_text())


def test_score_of_a_bare_architecture_twice_writes_the_same_consistency_json(tmp_path, capsys):
    first, second = score(capsys, tmp_path / "a"), score(capsys, tmp_path / "b")
    assert first == second  # no field of consistency.json names a time
    assert first["random_weights"] is True and first["seed"] == 42
    other = score(capsys, tmp_path / "c", "--seed", "7")
    assert other["seed"] == 7 and other["gaze_consistency"] != first["gaze_consistency"]  # the seed built the net


def test_score_seed_must_be_a_numpy_seed(tmp_path, capsys):
    """transformers.set_seed seeds numpy too, which takes seeds below 2**32: a usage error, not a traceback."""
    argv = ("score", "--model", "test_resnet", "--dataset", SHAPES, "--seed", str(2**32))
    rc, _, err = cli(capsys, *argv, "--output-dir", tmp_path / "x")
    assert rc == 2 and err.startswith("error: argument --seed: must be an integer in [0, 2**32)"), err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_cam_of_a_bare_architecture_twice_draws_the_same_overlays(tmp_path, capsys):
    images = []
    for i, row in enumerate(load_image_dataset(SHAPES, "test").select([0, 1])):
        images.append(tmp_path / f"{i}.png")
        row["image"].save(images[-1])
    runs = []
    for name, seed in (("a", "42"), ("b", "42"), ("c", "7")):
        argv = ("cam", "--model", "test_resnet", "--image-size", str(SIZE), "--seed", seed, "--image", *images)
        rc, out, err = cli(capsys, *argv, "--output-dir", tmp_path / name)
        assert rc == 0, err
        runs.append((out, [(tmp_path / name / f"{i}_cam.png").read_bytes() for i in range(len(images))]))
    assert runs[0] == runs[1]  # the printed predictions and scores, and the pictures byte for byte
    assert runs[2][0] != runs[0][0]  # another seed, another network: other scores


def test_cascading_randomization_is_the_same_for_the_same_seed():
    """The sanity check (and ``sweep --sanity``, which passes its seed) draws the same re-initialisations."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3).eval()
    images = torch.randn(4, 3, 64, 64)
    first = cascading_randomization(model, images, target="layer2", seed=3)
    torch.randn(100)  # the global generator moves on: the check must not depend on it
    assert cascading_randomization(model, images, target="layer2", seed=3) == first
    assert cascading_randomization(model, images, target="layer2", seed=4) != first
