"""Planted images (``builtin:shapes?planted=...``) and the recall of a ranking of the per-image table
(hf_gazecons/planted_ranking.py): the data, the loading of the marks, recall@k against a plain count."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict, Features, Image, Value
from tiny import image_bytes

from hf_gazecons.data import load_image_dataset, make_shapes
from hf_gazecons.errors import DataError
from hf_gazecons.planted_ranking import planted_recall, planted_runs, planted_summary, planted_table
from hf_gazecons.run_record import finished_runs

SIZE = 48


@pytest.fixture(scope="module")
def plain_and_planted() -> tuple[DatasetDict, DatasetDict]:
    options = dict(size=SIZE, n_train=3, n_val=10, n_test=2, seed=1)
    return make_shapes(**options), make_shapes(**options, planted=0.1)


def test_a_known_share_of_validation_images_is_planted_and_nothing_else_changes(plain_and_planted):
    plain, planted = plain_and_planted
    marks = planted["validation"]["planted"][:]
    assert sum(marks) == 4  # round(0.1 * 40)
    assert "planted" not in plain["validation"].column_names  # the option off: the data set of before
    changed = [a != b for a, b in zip(image_bytes(plain["validation"]), image_bytes(planted["validation"]))]
    assert changed == marks
    assert planted["validation"]["label"][:] == plain["validation"]["label"][:]
    for split in ("train", "test"):
        assert image_bytes(plain[split]) == image_bytes(planted[split])
        assert not any(planted[split]["planted"][:])


def test_a_planted_object_sits_in_a_corner_away_from_every_class_place(plain_and_planted):
    plain, planted = plain_and_planted
    for row, moved in zip(planted["validation"], plain["validation"]):
        ys, xs = np.nonzero(np.asarray(row["mask"]))
        centre = np.array([xs.mean(), ys.mean()]) / SIZE
        corner_distance = np.abs(centre - np.round(centre)).max()  # to the nearest image corner, per axis
        if row["planted"]:
            assert corner_distance < 0.3, centre
            ys0, xs0 = np.nonzero(np.asarray(moved["mask"]))
            assert np.linalg.norm(centre - np.array([xs0.mean(), ys0.mean()]) / SIZE) > 0.15


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5])
def test_a_planted_share_outside_0_1_is_one_line(share):
    with pytest.raises(DataError, match=r"0 <= planted < 1"):
        load_image_dataset(f"builtin:shapes?size={SIZE}&planted={share}")


def test_loading_keeps_an_id_and_the_planted_marks(tmp_path):
    shapes = make_shapes(size=32, n_train=1, n_val=1, n_test=1)["test"]
    images = [{"bytes": b, "path": None} for b in image_bytes(shapes)]
    features = Features(
        {"img": Image(), "label": Value("int64"), "file_name": Value("string"), "planted": Value("bool"),
         "other": Value("int64")}
    )  # fmt: skip
    data = {
        "img": images, "label": [0, 1, 0, 1], "file_name": list("abcd"), "planted": [False, True] * 2, "other": [1] * 4
    }  # fmt: skip
    DatasetDict({"train": Dataset.from_dict(data, features=features)}).save_to_disk(str(tmp_path / "d"))
    loaded = load_image_dataset(str(tmp_path / "d"), "train")
    assert loaded.column_names == ["image", "label", "id", "planted"]
    assert loaded["id"][:] == list("abcd") and loaded["planted"][:] == [False, True, False, True]


def _table(planted: list[bool], **columns: list[float | None]) -> pa.Table:
    return pa.table({"planted": planted, **{name: pa.array(values, pa.float64()) for name, values in columns.items()}})


def test_recall_at_k_against_a_plain_count():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 40))
        planted = rng.random(n) < 0.3
        if not planted.any():
            planted[0] = True
        scores = rng.normal(size=n) + 2 * planted * rng.random()
        k = int(planted.sum())
        top = sorted(range(n), key=lambda i: (-scores[i], i))[:k]  # highest first, earlier rows on ties
        expected = sum(planted[i] for i in top) / k
        assert planted_recall(_table(planted.tolist(), s=scores.tolist()), "s") == pytest.approx(expected)


def test_recall_ties_missing_values_and_absent_columns():
    table = _table([True, False, True, False], d=[None, 5.0, 1.0, 1.0], cross_entropy=[3.0, 2.0, 1.0, 0.0])
    assert planted_recall(table, "d") == 0.5  # the missing value ranks last; the tie goes to the earlier row
    assert planted_recall(table, "cross_entropy") == 0.5
    assert planted_recall(table, "absent") is None
    assert planted_recall(_table([False, False], d=[1.0, 2.0]), "d") is None
    summary = planted_summary(table)
    assert summary == {"n": 4, "k": 2, "chance": 0.5, "recall": {"cross_entropy": 0.5}}
    assert planted_summary(pa.table({"d": [1.0]})) is None


def test_planted_runs_rank_all_rows_or_the_correct_ones(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"config": {"model": "m", "lambda_max": 5.0, "seed": 3}, "final": {}}))
    planted = [True, True, False, False, True, False]
    correct = [True, False, True, True, True, False]
    deviation = [0.9, 0.1, 0.8, 0.2, 0.05, 0.7]
    table = _table(planted, deviation_paper=deviation, cross_entropy=[0.1, 2.0, 0.3, 0.2, 0.4, 1.5])
    pq.write_table(table.append_column("correct", pa.array(correct)), run / "samples.parquet")

    (every,) = planted_runs(finished_runs(tmp_path))
    assert every["k"] == 3 and every["recall"] == {"deviation_paper": 1 / 3, "cross_entropy": 2 / 3}
    (among_correct,) = planted_runs(finished_runs(tmp_path), correct_only=True)
    assert among_correct["k"] == 2 and among_correct["n"] == 4
    assert among_correct["recall"] == {"deviation_paper": 0.5, "cross_entropy": 0.5}
    assert (among_correct["backbone"], among_correct["lambda"], among_correct["seed"]) == ("m", 5.0, 3)
    rows = planted_table([every, among_correct])["run_rows"]
    assert rows[0] == ["m", "5", "paper", "3", "3 of 6", "0.500", "0.333", "0.667"]
