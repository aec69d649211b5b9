"""scripts/gpu_check.py runs end to end in its ``--device cpu --quick`` mode, so that it cannot rot.

The real check needs a GPU (``python scripts/gpu_check.py``); here only its code paths and its one
JSON on stdout are checked, with tiny models and data, never a timing goal.
"""

import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

GPU_CHECK = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_gpu_check_cpu_quick_prints_one_json(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models on a busy machine: no thread contention
    done = subprocess.run(
        [sys.executable, str(GPU_CHECK), "--device", "cpu", "--quick", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # stdout is the JSON and nothing else
    assert set(report) == {"device", "settings", "goals", "gradcam", "train_epoch", "scoring", "met", "seconds_taken"}
    assert report["device"]["type"] == "cpu"
    assert set(report["met"]) == {"gradcam", "train_epoch", "scoring"}
    assert report["settings"]["train_epoch"]["precision"] == "bf16"
    ratios = (
        report["gradcam"]["ratio_vs_forward"],
        report["train_epoch"]["ratio_vs_trainer"],
        report["scoring"]["throughput_ratio"],
        report["scoring"]["throughput_ratio_grid"],
    )
    assert all(isinstance(r, float) and math.isfinite(r) and r > 0 for r in ratios)
    assert report["train_epoch"]["details"]["penalty"]["penalty_samples"] >= 2  # bf16 regularised steps took part
    for name in report["met"]:
        assert report[name]["met"] in (True, False, None)
        assert set(report["goals"][name]) <= set(report[name])  # every goal has its measurement


def test_gpu_check_help_and_a_missing_gpu(capsys, monkeypatch):
    """``--help`` works without a GPU; ``--device cuda`` without one is a one-line usage error, not a crash."""
    spec = importlib.util.spec_from_file_location("hf_gazecons_gpu_check", GPU_CHECK)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    with pytest.raises(SystemExit) as done:
        gpu_check.main(["--help"])
    assert done.value.code == 0 and "--quick" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as done:
        gpu_check.main([])  # the default device is cuda
    err = capsys.readouterr().err
    assert done.value.code == 2 and "no CUDA device is available (use --device cpu --quick" in err
    full = gpu_check.settings(quick=False)  # the GPU run's settings fit the bench functions it calls
    assert set(full) == set(gpu_check.GOALS) == {"gradcam", "train_epoch", "scoring"}
    functions = {
        "gradcam": gpu_check.bench_gradcam,
        "train_epoch": gpu_check.bench_train_epoch,
        "scoring": gpu_check.bench_scoring_scale,
    }
    for name, function in functions.items():
        inspect.signature(function).bind(**full[name], device=torch.device("cuda"))
    assert full["train_epoch"]["precision"] == "bf16" and full["gradcam"]["batch"] == 64
