"""GPU check: hf_gazecons against plain PyTorch / transformers on one GPU, printed as ONE JSON object.

    python scripts/gpu_check.py --output gpu.json         # CUDA; ~3-5 min on one H100/H200 (limit: 8)
    python scripts/gpu_check.py --device cpu --quick      # tiny models and data: what the test suite runs

Three measurements, each side by side in one run with the benchmark's functions (``scripts/bench_*.py``):

* ``gradcam``     — one Grad-CAM batch (resnet18, 224 px, batch 64) against a no-grad forward, and
                    the peer libraries that are installed (``pip install -e ".[peers]"``);
* ``train_epoch`` — bf16 training epochs (``bf16=True``; the timm loop under
                    ``torch.autocast("cuda", dtype=torch.bfloat16)``) of the regularised
                    ``GazeConsistencyTrainer``, the plain ``Trainer`` and a hand-written timm loop on
                    the benchmark's chest-X-ray-like JPEG folder, pinned memory, loader workers;
                    goal: regularised / plain Trainer >= 0.95;
* ``scoring``     — ``gaze_consistency`` images/s against a no-grad forward over the same
                    DataLoader; goal >= 0.90 (with and without ``--grid``).

Every timing synchronises the device. Only the JSON goes to stdout (progress and library output
go to stderr). The data folder is generated once (``--data-dir``, default ~/.cache/hf_gazecons/bench).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the measurements: scripts/bench_*.py
import bench_common  # noqa: E402  (first: it also puts the repo root on the path)
from bench_gradcam import bench_gradcam  # noqa: E402
from bench_scoring import bench_scoring_scale  # noqa: E402
from bench_training import bench_train_epoch  # noqa: E402

GOALS: dict[str, dict[str, dict[str, Any]]] = {
    "gradcam": bench_common.GOALS["gradcam"],
    "train_epoch": {"ratio_vs_trainer": {"op": ">=", "value": 0.95}},
    "scoring": {"throughput_ratio": {"op": ">=", "value": 0.90}, "throughput_ratio_grid": {"op": ">=", "value": 0.90}},
}


def settings(quick: bool) -> dict[str, dict[str, Any]]:
    """What each measurement runs: the GPU workload, or (``quick``) tiny CPU-sized stand-ins."""
    workers = 1 if quick else max(1, min(16, (os.cpu_count() or 2) - 2))
    if quick:
        model, size, data = "test_resnet", 64, {"n_images": 48, "image_px": 96}
        return {
            "gradcam": {"model": model, "size": size, "batch": 4, "reps": 2},
            "train_epoch": {
                "model": model, "size": size, "batch": 8, **data, "n_train": 16, "workers": workers, "lam": 100.0,
                "warmup_steps": 1, "reps": 1, "loader_images": 8, "epochs": 1, "precision": "bf16",
            },
            "scoring": {
                "model": model, "size": size, "batch": 8, **data, "per_rep": 32, "reps": 1, "workers": workers,
                "grid": [3, 3], "rss_small": 0, "rss_large": 0, "probes": False,
            },
        }  # fmt: skip
    data = {"n_images": 2048, "image_px": 512}
    return {
        "gradcam": {"model": "resnet18", "size": 224, "batch": 64, "reps": 20},
        "train_epoch": {
            "model": "resnet18", "size": 224, "batch": 64, **data, "n_train": 1792, "workers": workers, "lam": 100.0,
            "warmup_steps": 5, "reps": 2, "loader_images": 256, "epochs": 3, "precision": "bf16",
        },
        "scoring": {
            "model": "resnet18", "size": 224, "batch": 64, **data, "per_rep": 4096, "reps": 3, "workers": workers,
            "grid": [14, 14], "rss_small": 0, "rss_large": 0, "probes": False,
        },
    }  # fmt: skip


def run_check(device: torch.device, quick: bool, data_dir: str | None) -> dict[str, Any]:
    """The three measurements; the JSON report as a dict."""
    chosen = settings(quick)
    report: dict[str, Any] = {"device": bench_common.device_info(device), "settings": chosen, "goals": GOALS}
    started = time.perf_counter()
    functions = {
        "gradcam": lambda s: bench_gradcam(**s, device=device),
        "train_epoch": lambda s: bench_train_epoch(**s, device=device, data_dir=data_dir),
        "scoring": lambda s: bench_scoring_scale(**s, device=device, data_dir=data_dir),
    }
    for name, measure in functions.items():
        print(f"... {name}", file=sys.stderr, flush=True)
        section_started = time.perf_counter()
        result = measure(chosen[name])
        result["details"] = result.pop("_extra", None)  # data folder, penalty participation, ...
        result["met"] = bench_common.goals_met(name, result, GOALS)
        result["seconds_taken"] = round(time.perf_counter() - section_started, 1)
        report[name] = result
    report["met"] = {name: report[name]["met"] for name in functions}
    report["seconds_taken"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models and data (for the test suite)")
    parser.add_argument("--data-dir", help="where the image folder is generated and cached")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available (use --device cpu --quick for the tiny check)")
    device = torch.device(args.device)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
        report = run_check(device, args.quick, args.data_dir)
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
