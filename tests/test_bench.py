"""scripts/bench.py runs end to end with tiny settings and writes the documented JSON.

The code paths, the schema and what each section measured are checked here: every ratio is the
quotient of the times (or memories) it reports, every "met" follows from its goals, and the maps
and values timed against each other agree. Never a timing goal.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

BENCH_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"

SECTION_KEYS = {
    "gradcam": [
        "forward_s", "ours_s", "pytorch_grad_cam_s", "captum_s", "torchcam_s",
        "ratio_vs_forward", "speedup_vs_pytorch_grad_cam", "speedup_vs_captum", "speedup_vs_torchcam",
        "max_abs_diff_vs_pytorch_grad_cam", "max_abs_diff_vs_captum", "max_abs_diff_vs_torchcam", "met",
    ],
    "memory": ["ours_mb", "inference_mb", "captum_mb", "ratio_vs_inference", "ratio_vs_captum", "met"],
    "dataset_scoring": ["ours_s", "study_way_s", "speedup", "values_agree", "ours_value", "study_way_value", "met"],
    "train_step": ["rows", "overhead", "overhead_stage", "met"],
    "train_epoch": [
        "gazecons_images_per_s", "trainer_images_per_s", "timm_loop_images_per_s", "ratio_vs_timm_loop",
        "ratio_vs_trainer", "loader_images_per_s", "timm_loader_images_per_s", "met",
    ],
    "scoring_scale": [
        "paper_images_per_s", "paper_grid_images_per_s", "inference_images_per_s", "throughput_ratio",
        "throughput_ratio_grid", "rss_small_mb", "rss_large_mb", "rss_growth", "met",
    ],
    "cli_help": ["train_help_cold_s", "train_help_cached_s", "help_s", "met"],
    "faithfulness": [
        "deletion_ours_s", "deletion_torchcam_s", "speedup_vs_torchcam", "max_abs_diff_vs_torchcam", "road_ours_s",
        "road_pytorch_grad_cam_s", "speedup_vs_pytorch_grad_cam", "max_abs_diff_vs_pytorch_grad_cam", "met",
    ],
}  # fmt: skip
PEERS = ("pytorch_grad_cam", "captum", "torchcam")
ONE_FORWARD = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcam_elementwise", "eigencam")
WITH_TORCHCAM = ("gradcampp", "xgradcam", "layercam")  # the methods torchcam implements too
SECTION_KEYS["cam_methods"] = [
    "gradcam_today_s",
    *[key for m in ONE_FORWARD for key in (f"{m}_s", f"{m}_ratio_vs_gradcam", f"{m}_speedup_vs_pytorch_grad_cam",
                                          *([f"{m}_speedup_vs_torchcam"] if m in WITH_TORCHCAM else []))],
    *[key for m in ONE_FORWARD for key in (f"{m}_max_abs_diff_vs_pytorch_grad_cam",
                                          *([f"{m}_max_abs_diff_vs_torchcam"] if m in WITH_TORCHCAM else []))],
    "max_ratio_vs_gradcam", "min_speedup_vs_pytorch_grad_cam", "score_all_one_forward_s",
    "score_slowest_one_forward_method", "all_one_forward_ratio_vs_slowest", "scorecam_s", "torchcam_scorecam_s",
    "scorecam_speedup_vs_torchcam", "scorecam_max_abs_diff_vs_torchcam", "scorecam_mb", "torchcam_scorecam_mb",
    "scorecam_memory_ratio_vs_torchcam", "score_all_s", "score_scorecam_s", "all_ratio_vs_slowest", "met",
]
TRAIN_STEP_ROW = [
    "batch", "plain_s", "default_s", "default_ratio", "stage_held_stats_s", "stage_held_stats_ratio",
    "stage_second_order_s", "stage_second_order_ratio",
    "stage_exact_s", "stage_exact_plain_s", "stage_exact_ratio", "maps_mean_abs_diff", "maps_max_abs_diff",
    "probe_s",
]  # fmt: skip


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
def common(bench):
    """scripts/bench_common.py (importable once bench.py has put scripts/ on the path)."""
    import bench_common

    return bench_common


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-data")


def run_main(bench, *argv):
    threads = torch.get_num_threads()
    try:  # one thread: tiny models on a busy 2-core machine are far faster without thread contention
        assert bench.main(["--tiny", "--threads", "1", *map(str, argv)]) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory, data_dir):
    """One tiny run through main(): argparse, every section (memory probes in subprocesses), JSON."""
    output = tmp_path_factory.mktemp("bench") / "bench.json"
    run_main(bench, "--data-dir", data_dir, "--output", output)
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
            batch = "batches" if section == "train_step" else "batch"
            assert set(report["settings"][section]) >= {"model", "size", batch}
        assert report["met"][section] in (True, False, None)
    for penalty in report["settings"]["train_step"]["penalty"].values():  # per batch: the penalty took part
        assert len(penalty) == 4  # default target; stage -2 held_stats first and second order; exact
        for contender in penalty:
            assert penalty[contender]["samples"] >= 2, contender


@pytest.mark.parametrize("section", list(SECTION_KEYS))
def test_section_keys(report, section):
    assert list(report[section]) == SECTION_KEYS[section]
    assert report[section]["met"] in (True, False, None)


def test_gradcam_numbers_and_agreement(report, common):
    g = report["gradcam"]
    assert _positive(g["forward_s"]) and _positive(g["ours_s"])
    assert g["ratio_vs_forward"] == pytest.approx(g["ours_s"] / g["forward_s"])
    for peer in PEERS:
        if common.peer_available(peer):
            assert _positive(g[f"{peer}_s"])
            assert g[f"speedup_vs_{peer}"] == pytest.approx(g[f"{peer}_s"] / g["ours_s"])
            assert 0 <= g[f"max_abs_diff_vs_{peer}"] <= 1e-4, peer  # the same maps are being timed
        else:
            assert g[f"{peer}_s"] is None and g[f"speedup_vs_{peer}"] is None
    assert g["met"] == common.goals_met("gradcam", g)


def test_memory_numbers(report, common):
    """Peak growth of fresh processes: ours against inference (and captum), as the ratios say."""
    m = report["memory"]
    assert m["ours_mb"] >= 0 and m["inference_mb"] >= 0
    assert m["ratio_vs_inference"] == common.ratio(m["ours_mb"], m["inference_mb"])
    if common.peer_available("captum"):
        assert m["captum_mb"] >= 0 and m["ratio_vs_captum"] == common.ratio(m["ours_mb"], m["captum_mb"])
    else:
        assert m["captum_mb"] is None and m["ratio_vs_captum"] is None
    assert report["settings"]["memory"]["method"].startswith(("VmHWM", "ru_maxrss", "torch.cuda"))
    assert m["met"] == common.goals_met("memory", m)


def test_dataset_scoring_values_agree(report, common):
    d = report["dataset_scoring"]
    assert _positive(d["ours_s"]) and _positive(d["study_way_s"])
    assert d["speedup"] == pytest.approx(d["study_way_s"] / d["ours_s"])
    assert d["values_agree"] is True
    assert d["ours_value"] == pytest.approx(d["study_way_value"], abs=1e-5)
    assert d["ours_value"] > 0
    assert d["met"] == common.goals_met("dataset_scoring", d)


def test_train_step_rows_paths_and_ratios(report, common):
    """Every batch of the profile has a row; each contender took the path its mode promises (the
    default target has nothing coupled after it; stage -2 has train-mode BatchNorm); the ratios are
    the quotients of the times measured side by side; the goals need batches >= 32 (none here)."""
    t, settings = report["train_step"], report["settings"]["train_step"]
    assert [row["batch"] for row in t["rows"]] == settings["batches"] == [4, 8]
    for row in t["rows"]:
        assert list(row) == TRAIN_STEP_ROW
        for key in TRAIN_STEP_ROW[1:]:  # the two definitions' maps differ (train-mode BatchNorm couples)
            assert _positive(row[key]), (row["batch"], key)
        assert row["maps_mean_abs_diff"] <= row["maps_max_abs_diff"] <= 1
        assert row["default_ratio"] == pytest.approx(row["default_s"] / row["plain_s"])
        assert row["stage_held_stats_ratio"] == pytest.approx(row["stage_held_stats_s"] / row["plain_s"])
        assert row["stage_second_order_ratio"] == pytest.approx(row["stage_second_order_s"] / row["plain_s"])
        assert row["stage_exact_ratio"] == pytest.approx(row["stage_exact_s"] / row["stage_exact_plain_s"])
    for paths in settings["per_sample_paths"].values():
        assert paths == {
            "default target": "independent", "stage -2, held_stats": "held_stats",
            "stage -2, held_stats, second order": "held_stats", "stage -2, exact": "exact",
        }  # fmt: skip
    assert t["overhead"] is None and t["overhead_stage"] is None and t["met"] is None
    assert t["met"] == common.goals_met("train_step", t)


def test_cli_help_timed_fresh_processes(report, common):
    c = report["cli_help"]
    for key in ("train_help_cold_s", "train_help_cached_s", "help_s"):
        assert _positive(c[key]), key
    assert report["settings"]["cli_help"]["reps"] == 1  # the tiny profile
    assert c["met"] == common.goals_met("cli_help", c)


def test_faithfulness_numbers_and_agreement(report, common):
    f = report["faithfulness"]
    assert _positive(f["deletion_ours_s"]) and _positive(f["road_ours_s"])
    for peer, prefix, key in (("torchcam", "deletion", "torchcam"), ("pytorch_grad_cam", "road", "pytorch_grad_cam")):
        if common.peer_available(peer):
            assert _positive(f[f"{prefix}_{key}_s"]) and _positive(f[f"speedup_vs_{key}"])
            assert f[f"speedup_vs_{key}"] == pytest.approx(f[f"{prefix}_{key}_s"] / f[f"{prefix}_ours_s"])
            assert 0 <= f[f"max_abs_diff_vs_{key}"] <= 1e-4, peer  # the same numbers are being timed
        else:
            assert f[f"{prefix}_{key}_s"] is None and f[f"speedup_vs_{key}"] is None


def test_cam_methods_numbers_and_agreement(report, common):
    """Every method was timed, the ratios are the times' ratios, and the timed maps are the peers'."""
    c = report["cam_methods"]
    for m in ONE_FORWARD:
        assert _positive(c[f"{m}_s"])
        assert c[f"{m}_ratio_vs_gradcam"] == pytest.approx(c[f"{m}_s"] / c["gradcam_today_s"])
        if common.peer_available("pytorch_grad_cam"):
            assert _positive(c[f"{m}_speedup_vs_pytorch_grad_cam"])
            assert 0 <= c[f"{m}_max_abs_diff_vs_pytorch_grad_cam"] <= 1e-4, m
    assert c["max_ratio_vs_gradcam"] == max(c[f"{m}_ratio_vs_gradcam"] for m in ONE_FORWARD[:-1])
    assert c["score_slowest_one_forward_method"] in ONE_FORWARD and _positive(c["all_one_forward_ratio_vs_slowest"])
    assert _positive(c["scorecam_s"]) and _positive(c["score_all_s"]) and _positive(c["all_ratio_vs_slowest"])
    assert c["scorecam_mb"] >= 0
    if common.peer_available("torchcam"):
        for m in ("xgradcam", "layercam"):
            assert 0 <= c[f"{m}_max_abs_diff_vs_torchcam"] <= 1e-4, m
        assert c["gradcampp_max_abs_diff_vs_torchcam"] > 1e-3  # torchcam's GradCAMpp is not the paper's
        assert 0 <= c["scorecam_max_abs_diff_vs_torchcam"] <= 1e-4
        assert c["scorecam_speedup_vs_torchcam"] == pytest.approx(c["torchcam_scorecam_s"] / c["scorecam_s"])
        assert c["torchcam_scorecam_mb"] >= 0
    assert report["settings"]["cam_methods"]["scorecam_memory_method"]


def test_timeit_interleaved_rotates_and_takes_medians(common):
    calls = []
    medians = common.timeit_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotating order
    assert set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())


def test_goals_met(common):
    assert common.goals_met("train_step", {"overhead": 1.05, "overhead_stage": 1.4}) is True
    assert common.goals_met("train_step", {"overhead": 1.05, "overhead_stage": 1.6}) is False
    assert common.goals_met("train_step", {"overhead": 1.2, "overhead_stage": 1.4}) is False
    assert common.goals_met("train_step", {"overhead": 1.05, "overhead_stage": None}) is None
    assert common.goals_met("gradcam", {"ratio_vs_forward": 1.0, "speedup_vs_pytorch_grad_cam": None}) is None


def test_train_epoch_numbers_and_penalty(report, data_dir):
    t, settings = report["train_epoch"], report["settings"]["train_epoch"]
    for key in SECTION_KEYS["train_epoch"][:-1]:
        assert _positive(t[key]), key
    assert t["ratio_vs_timm_loop"] == pytest.approx(t["gazecons_images_per_s"] / t["timm_loop_images_per_s"])
    assert t["ratio_vs_trainer"] == pytest.approx(t["gazecons_images_per_s"] / t["trainer_images_per_s"])
    assert settings["n_train"] == 24 and Path(settings["data"]).parent == data_dir
    assert settings["penalty"]["lambda"] == 100.0 and settings["penalty"]["penalty_samples"] >= 2  # it took part


def test_scoring_scale_numbers_and_probes(report, common):
    c, settings = report["scoring_scale"], report["settings"]["scoring_scale"]
    for key in ("paper_images_per_s", "paper_grid_images_per_s", "inference_images_per_s"):
        assert _positive(c[key]), key
    assert c["throughput_ratio"] == pytest.approx(c["paper_images_per_s"] / c["inference_images_per_s"])
    assert c["throughput_ratio_grid"] == pytest.approx(c["paper_grid_images_per_s"] / c["inference_images_per_s"])
    assert c["rss_small_mb"] > 0 and c["rss_large_mb"] > 0  # the peak resident memory of a whole process
    assert c["rss_growth"] == pytest.approx(c["rss_large_mb"] / c["rss_small_mb"])
    assert c["met"] == common.goals_met("scoring_scale", c)
    small, large = settings["probes"]
    assert (small["n"], small["n_samples"], large["n"], large["n_samples"]) == (16, 16, 64, 64)  # every image scored


def test_sections_option_runs_only_the_named_sections(bench, tmp_path):
    run_main(bench, "--sections", "train_step", "--output", tmp_path / "one.json")
    one = json.loads((tmp_path / "one.json").read_text())
    assert set(one) == {"device", "settings", "goals", "met", "train_step"}
    assert set(one["settings"]) == {"profile", "train_step"} and set(one["met"]) == {"train_step"}


def test_chest_like_folder_is_deterministic_complete_and_reused(bench, tmp_path):  # bench: scripts/ on the path
    from bench_data import CLASS_NAMES, chest_like_folder

    one = chest_like_folder(tmp_path / "a", n_images=8, size=32, processes=1)
    two = chest_like_folder(tmp_path / "b", n_images=8, size=32, processes=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*.jpg"))
    assert len(files) == 8 and files == sorted(p.relative_to(two) for p in two.rglob("*.jpg"))
    assert {p.parts[0] for p in files} == {"train", "validation"} and {p.parts[1] for p in files} == set(CLASS_NAMES)
    assert all((one / p).read_bytes() == (two / p).read_bytes() for p in files)
    with Image.open(one / files[0]) as image:
        assert image.mode == "L" and image.size == (32, 32) and image.format == "JPEG"
    stamp = (one / files[0]).stat().st_mtime_ns
    assert chest_like_folder(tmp_path / "a", n_images=8, size=32) == one  # cached: not written again
    assert (one / files[0]).stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "a").iterdir()] == [one.name]  # no staging folder left behind
