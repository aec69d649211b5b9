"""The per-image table (hf_gazecons/samples.py, data/row_index.py): written by ``score``, read back with
``datasets`` and pandas, its rows against ``consistency.json`` and against a plain per-image computation.

A briefly trained timm ``test_resnet`` (tests/tiny.py) at 64x64 on built-in shapes with planted images.
"""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from console import in_process
from tiny import TRAINED_DATA, trained_shapes_model

from hf_gazecons.cam import GradCAM
from hf_gazecons.cli.main import main
from hf_gazecons.data import load_image_dataset, select_subset
from hf_gazecons.data.builtin import SHAPE_NAMES
from hf_gazecons.data.row_index import with_row_index
from hf_gazecons.errors import MetricError, UsageError
from hf_gazecons.metric import gaze_consistency
from hf_gazecons.models import load_model
from hf_gazecons.samples import SAMPLE_COLUMNS, SampleColumn, SampleRecorder, register_column

CLASSES = list(SHAPE_NAMES[:4])
DATA = TRAINED_DATA  # 40 validation images, 4 of them planted
SUBSET = 20


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return trained_shapes_model()


@pytest.fixture(scope="module")
def scored(model_dir, tmp_path_factory) -> Path:
    """``score --variant reference --max-samples 20`` of the planted shapes (the table in parquet)."""
    out_dir = tmp_path_factory.mktemp("samples") / "scored"
    argv = ["score", "--model", model_dir, "--dataset", DATA, "--variant", "reference"]
    assert main([str(a) for a in [*argv, "--max-samples", SUBSET, "--no-report", "--output-dir", out_dir]]) == 0
    return out_dir


def test_the_table_reads_back_and_its_rows_make_the_aggregate(scored):
    scores = json.loads((scored / "consistency.json").read_text())
    frame = pd.read_parquet(scored / "samples.parquet")
    dataset = datasets.Dataset.from_parquet(str(scored / "samples.parquet"))
    assert dataset.num_rows == len(frame) == scores["n_samples"] == SUBSET
    assert dataset.column_names == list(frame.columns)
    assert dataset.to_pandas().equals(frame)
    assert list(frame.columns[:3]) == ["index", "planted", "label"]
    for name in ("deviation_paper", "deviation_robust", "deviation_reference", "in_l_cam", "energy_pointing_game"):
        assert name in frame.columns

    counted = frame[frame["in_l_cam"]]
    assert len(counted) > 4  # the random model gets several images of a class right: the check has rows
    for variant, value in scores["gaze_consistency_by_variant"].items():
        assert counted[f"deviation_{variant}"].mean() == pytest.approx(value, rel=1e-9), variant
    asked = f"deviation_{scores['variant']}"  # per class, consistency.json holds the variant asked for
    by_class = counted.groupby("compared_class")[asked].mean()
    for name, entry in scores["per_class"].items():
        assert entry["n_samples"] == int((frame["label"] == name).sum())
        assert entry["n_correct"] == int((frame["correct"] & (frame["label"] == name)).sum())
        assert entry["n_zero_maps"] == int((frame["correct"] & frame["zero_map"] & (frame["label"] == name)).sum())
        if entry["gaze_consistency"] is None:
            assert name not in by_class.index
        else:
            assert by_class[name] == pytest.approx(entry["gaze_consistency"], rel=1e-9)
    correct = frame[frame["correct"]]
    assert (frame["correct"] == (frame["label"] == frame["prediction"])).all()
    assert (frame["compared_class"] == frame["prediction"]).all()
    assert scores["accuracy"] == pytest.approx(frame["correct"].mean())
    for name in ("energy_pointing_game", "pointing_game"):
        assert correct[name].astype(float).mean() == pytest.approx(scores["localization"][name], rel=1e-9)
    assert np.exp(-frame["cross_entropy"][frame["correct"]]).between(0, 1).all()


def test_index_and_planted_are_the_data_sets_rows(scored):
    frame = pd.read_parquet(scored / "samples.parquet")
    split = with_row_index(load_image_dataset(DATA, "validation"))
    subset = select_subset(split, SUBSET, seed=42)  # score's default --seed
    assert frame["index"].tolist() == subset["index"][:]
    assert frame["index"].tolist() != list(range(SUBSET))  # a seeded random subset, not the first rows
    assert frame["planted"].tolist() == [split[i]["planted"] for i in frame["index"]]
    assert frame["label"].tolist() == [CLASSES[split[i]["label"]] for i in frame["index"]]


def test_examples_are_the_extremes_of_the_table(scored):
    frame = pd.read_parquet(scored / "samples.parquet")
    listing = json.loads((scored / "examples" / "examples.json").read_text())
    assert listing, "no examples were written"
    for entry in listing:
        assert (scored / "examples" / entry["file"]).is_file()
        rows = frame[frame["in_l_cam"] & (frame["compared_class"] == entry["class"])]["deviation_paper"]
        if entry["kind"] == "most" and entry["rank"] == 1:
            assert entry["deviation"] == pytest.approx(rows.min())
        if entry["kind"] == "least" and entry["rank"] == 1:
            assert entry["deviation"] == pytest.approx(rows.max())
        assert frame.loc[entry["position"], "index"] == entry["index"]


Plain = namedtuple("Plain", "maps predictions probabilities cross_entropy")


def _plain_per_image(loaded, images) -> Plain:
    """Each image alone through GradCAM: its map, prediction, probability and cross-entropy."""
    maps, predictions, probabilities, losses = [], [], [], []
    cam = GradCAM(loaded.model)
    loaded.model.eval()
    for image, label in images:
        out = cam(loaded.preprocessing(image)[None])
        logits = out.logits[0].double()
        maps.append(out.maps[0].double())
        predictions.append(int(logits.argmax()))
        probabilities.append(float(logits.softmax(0).max()))
        losses.append(float(F.cross_entropy(logits[None], torch.tensor([label]))))
    return Plain(maps, predictions, probabilities, losses)


def test_rows_equal_a_plain_per_image_computation(model_dir):
    """Every deviation of every row, each variant, against class maps summed in a plain loop."""
    loaded = load_model(str(model_dir))
    data = load_image_dataset(DATA, "validation")
    recorder = SampleRecorder(chunk_rows=5)  # several chunks of the temporary file
    gaze_consistency(loaded, data, samples=recorder, variant="reference", batch_size=7, progress=False)
    table = recorder.table.to_pandas()
    labels = data["label"][:]
    plain = _plain_per_image(loaded, zip(data["image"], labels))
    assert table["prediction"].tolist() == [CLASSES[p] for p in plain.predictions]
    assert table["probability"].to_numpy() == pytest.approx(plain.probabilities, rel=1e-5)
    assert table["cross_entropy"].to_numpy() == pytest.approx(plain.cross_entropy, rel=1e-4, abs=1e-6)
    correct = [p == y for p, y in zip(plain.predictions, labels)]
    for c, name in enumerate(CLASSES):
        mine = [m for m, p, ok in zip(plain.maps, plain.predictions, correct) if ok and p == c]
        rows = [i for i, p in enumerate(plain.predictions) if p == c]
        if not mine:
            assert table.loc[rows, "deviation_paper"].isna().all()
            continue
        mean = sum(mine) / len(mine)
        live = [m for m in mine if m.abs().sum() > 0]
        robust_map = sum(live) / len(live) if live else torch.zeros_like(mean)
        weight = 2 * float(robust_map.pow(2).mean()) if live else 2.0
        for i in rows:
            m = plain.maps[i]
            paper = float((m - mean).pow(2).mean())
            reference = float(torch.sqrt((m - mean).pow(2).sum()) / m.numel())
            norms = float(m.norm() * robust_map.norm())
            robust = weight * (1 - (float((m * robust_map).sum()) / norms if norms > 0 else 0.0))
            assert table.loc[i, "deviation_paper"] == pytest.approx(paper, rel=1e-4, abs=1e-7), (name, i)
            assert table.loc[i, "deviation_reference"] == pytest.approx(reference, rel=1e-4, abs=1e-7), (name, i)
            assert table.loc[i, "deviation_robust"] == pytest.approx(robust, rel=1e-4, abs=1e-7), (name, i)
            assert table.loc[i, "in_l_cam"] == (correct[i] and len(mine) >= 2)


def test_csv_format_and_no_table(model_dir, tmp_path, capsys):
    rc, _, err = in_process(
        capsys, "score", "--model", model_dir, "--dataset", DATA, "--samples-format", "csv", "--no-report",
        "--output-dir", tmp_path / "csv",
    )  # fmt: skip
    assert rc == 0, err
    frame = pd.read_csv(tmp_path / "csv" / "samples.csv")
    scores = json.loads((tmp_path / "csv" / "consistency.json").read_text())
    assert len(frame) == scores["n_samples"]
    assert frame[frame["in_l_cam"]]["deviation_paper"].mean() == pytest.approx(scores["gaze_consistency"], rel=1e-9)
    assert not (tmp_path / "csv" / "report.html").exists()

    rc, out, err = in_process(
        capsys, "score", "--model", model_dir, "--dataset", DATA, "--samples-format", "none", "--output-dir",
        tmp_path / "none",
    )  # fmt: skip
    assert rc == 0, err
    names = sorted(p.name for p in (tmp_path / "none").iterdir())
    assert names == ["class_maps.safetensors", "class_means.png", "consistency.json", "overlays.png", "report.html"]
    assert "samples.parquet" not in out and "examples/" not in out


def test_a_stream_is_indexed_by_its_position(model_dir, tmp_path, capsys):
    rc, _, err = in_process(
        capsys, "score", "--model", model_dir, "--dataset", DATA, "--streaming", "--no-report",
        "--output-dir", tmp_path / "stream",
    )  # fmt: skip
    assert rc == 0, err
    frame = pd.read_parquet(tmp_path / "stream" / "samples.parquet")
    assert frame["index"].tolist() == list(range(len(frame))) and len(frame) == 40
    assert "planted" not in frame.columns  # a stream's own columns are not read ahead


def test_a_full_temporary_disk_is_one_line(model_dir, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 99, 1))
    with pytest.raises(MetricError, match=r"temporary file .*TMPDIR.*--samples-format none") as caught:
        gaze_consistency(load_model(str(model_dir)), load_image_dataset(DATA, "validation"), samples=SampleRecorder())
    assert "\n" not in str(caught.value)


def test_a_registered_column_joins_the_table(model_dir):
    column = SampleColumn("top_logit", pa.float64(), "the largest logit", lambda b: b.logits.amax(1).double().numpy())
    register_column(column)
    try:
        with pytest.raises(UsageError, match="already registered"):
            register_column(column)
        recorder = SampleRecorder()
        gaze_consistency(load_model(str(model_dir)), load_image_dataset(DATA, "validation"), samples=recorder)
        assert recorder.table.column_names[-1] == "top_logit"
        assert recorder.table.schema.field("top_logit").metadata == {b"doc": b"the largest logit"}
    finally:
        SAMPLE_COLUMNS.pop("top_logit", None)


def test_the_cam_method_and_faithfulness_are_columns_where_asked_for(model_dir, tmp_path, scored):
    """``--cam-method`` names the maps of every row; ``--faithfulness`` adds each image's deletion and
    insertion AUC, the per-image values of consistency.json in the order scored."""
    plain = pd.read_parquet(scored / "samples.parquet")
    assert set(plain["cam_method"]) == {"gradcam"} and "deletion_auc" not in plain.columns
    out = tmp_path / "faithful"
    argv = ["score", "--model", model_dir, "--dataset", DATA, "--cam-method", "layercam", "--faithfulness", "deletion"]
    assert main([str(a) for a in [*argv, "--max-samples", 8, "--no-report", "--output-dir", out]]) == 0
    frame = pd.read_parquet(out / "samples.parquet")
    per_image = json.loads((out / "consistency.json").read_text())["faithfulness"]["per_image"]
    assert set(frame["cam_method"]) == {"layercam"} and len(frame) == len(per_image) == 8
    for metric in ("deletion_auc", "insertion_auc"):
        expected = [np.nan if image["gradcam"][metric] is None else image["gradcam"][metric] for image in per_image]
        np.testing.assert_allclose(frame[metric].to_numpy(dtype=float), expected, rtol=0, atol=0)
    assert pq.read_schema(out / "samples.parquet").field("deletion_auc").metadata[b"doc"].startswith(b"deletion_auc")
