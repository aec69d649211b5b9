"""scripts/bench.py runs end to end with tiny settings and writes the documented JSON.

Only the code paths and the schema are checked here, never a timing goal.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"

SECTION_KEYS = {
    "gradcam": [
        "forward_s", "ours_s", "pytorch_grad_cam_s", "captum_s", "torchcam_s",
        "ratio_vs_forward", "speedup_vs_pytorch_grad_cam", "speedup_vs_captum", "speedup_vs_torchcam",
        "max_abs_diff_vs_pytorch_grad_cam", "max_abs_diff_vs_captum", "max_abs_diff_vs_torchcam", "met",
    ],
    "memory": ["ours_mb", "inference_mb", "captum_mb", "ratio_vs_inference", "ratio_vs_captum", "met"],
    "dataset_scoring": ["ours_s", "study_way_s", "speedup", "values_agree", "ours_value", "study_way_value", "met"],
    "train_step": ["plain_s", "regularised_s", "overhead", "regularised_stage_s", "overhead_stage", "met"],
    "cli_help": ["train_help_cold_s", "train_help_cached_s", "help_s", "met"],
}  # fmt: skip
PEERS = ("pytorch_grad_cam", "captum", "torchcam")


def _load_bench():
    spec = importlib.util.spec_from_file_location("hf_gazecons_bench", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory):
    """One tiny run through main(): argparse, all four sections (memory in subprocesses), JSON."""
    output = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    try:  # one thread: tiny models on a busy 2-core machine are far faster without thread contention
        assert bench.main(["--tiny", "--threads", "1", "--output", str(output)]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(output.read_text())


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_top_level_schema(report, bench):
    assert set(report) == {"device", "settings", "goals", "met", *SECTION_KEYS}
    assert report["device"]["type"] == "cpu" and report["device"]["name"]
    assert report["settings"]["profile"] == "tiny"
    assert set(report["goals"]) == set(SECTION_KEYS)
    for section in SECTION_KEYS:
        if section != "cli_help":  # the only section without a model
            assert set(report["settings"][section]) >= {"model", "size", "batch"}
        assert report["met"][section] in (True, False, None)
    for target in ("default target", "stage -2"):  # the penalty took part
        assert report["settings"]["train_step"]["penalty"][target]["samples"] >= 2


@pytest.mark.parametrize("section", list(SECTION_KEYS))
def test_section_keys(report, section):
    assert list(report[section]) == SECTION_KEYS[section]
    assert report[section]["met"] in (True, False, None)


def test_gradcam_numbers_and_agreement(report, bench):
    g = report["gradcam"]
    assert _positive(g["forward_s"]) and _positive(g["ours_s"]) and _positive(g["ratio_vs_forward"])
    for peer in PEERS:
        if bench.peer_available(peer):
            assert _positive(g[f"{peer}_s"]) and _positive(g[f"speedup_vs_{peer}"])
            assert 0 <= g[f"max_abs_diff_vs_{peer}"] <= 1e-4, peer  # the same maps are being timed
        else:
            assert g[f"{peer}_s"] is None and g[f"speedup_vs_{peer}"] is None


def test_memory_numbers(report, bench):
    m = report["memory"]
    assert m["ours_mb"] >= 0 and m["inference_mb"] >= 0
    if bench.peer_available("captum"):
        assert m["captum_mb"] >= 0
    assert report["settings"]["memory"]["method"]


def test_dataset_scoring_values_agree(report):
    d = report["dataset_scoring"]
    assert _positive(d["ours_s"]) and _positive(d["study_way_s"]) and _positive(d["speedup"])
    assert d["values_agree"] is True
    assert d["ours_value"] == pytest.approx(d["study_way_value"], abs=1e-5)
    assert d["ours_value"] > 0


def test_train_step_numbers(report):
    t = report["train_step"]
    assert _positive(t["plain_s"]) and _positive(t["regularised_s"]) and _positive(t["overhead"])
    assert _positive(t["regularised_stage_s"]) and _positive(t["overhead_stage"])


def test_timeit_interleaved_rotates_and_takes_medians(bench):
    calls = []
    medians = bench.timeit_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotating order
    assert set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())


def test_goals_met(bench):
    assert bench.goals_met("train_step", {"overhead": 1.05}) is True
    assert bench.goals_met("train_step", {"overhead": 1.2}) is False
    assert bench.goals_met("gradcam", {"ratio_vs_forward": 1.0, "speedup_vs_pytorch_grad_cam": None}) is None
