"""Benchmark hf_gazecons against the usual ways of computing Grad-CAM, the study's metric and training.

    python scripts/bench.py --quick --output bench.json          # smaller data sets, fewer repetitions
    python scripts/bench.py --output bench.json                  # full settings
    python scripts/bench.py --quick --sections train_epoch scoring_scale --output bench.json
    python scripts/bench.py --device cuda --output bench.json    # (scripts/gpu_check.py: the GPU check)

``--sections NAME ...`` runs only the named sections. Eight sections, each timed IN ONE RUN with
interleaved repetitions (every repetition times every contender once, in rotating order, after a
warm-up; medians are reported):

* ``gradcam``         — one Grad-CAM batch: ours vs a no-grad forward, pytorch-grad-cam, captum and
                        torchcam, with a check that all of them compute the same maps;
* ``memory``          — peak memory growth of one batch (ours, plain inference, captum), each in a
                        fresh subprocess;
* ``dataset_scoring`` — ``gaze_consistency`` (one pass) vs the study's way (prediction pass, then a
                        full-backward Grad-CAM pass per class over its correct samples), same L_CAM;
* ``train_step``      — a plain cross-entropy optimizer step vs the consistency-regularised step at
                        batches 8, 32 and 128: at the default target, and at stage -2 (train-mode
                        BatchNorm after it) with held statistics and exact per-sample gradients
                        (``--quick``: exact up to batch 32 only, its cost grows with the batch squared);
* ``train_epoch``     — images/s of training epochs on an image folder shaped like the study's chest
                        X-rays: GazeConsistencyTrainer (lambda > 0) vs the plain transformers Trainer vs
                        a hand-written timm loop, same images, same loader workers;
* ``scoring_scale``   — ``gaze_consistency`` images/s (with and without ``--grid``) vs no-grad
                        inference over the same DataLoader, and the peak resident memory of scoring a
                        small and a 10x larger stream, each in a fresh subprocess;
* ``cli_help``        — ``hf-gazecons train --help`` (first call, which builds and caches it, then
                        from the cache) and ``hf-gazecons --help``, each a fresh process;
* ``faithfulness``    — deletion/insertion of a batch (ours vs torchcam's DeletionInsertionMetric) and
                        ROAD (ours vs pytorch-grad-cam's), same model, images, maps and classes, with a
                        check that they compute the same numbers.
* ``cam_methods``     — every CAM method on one batch against today's Grad-CAM and the peers' own
                        implementations (pytorch-grad-cam, torchcam), with a check of the maps;
                        Score-CAM against torchcam's (time, and peak memory in fresh processes); every
                        method in one pass (``score --cam-method all``) against the slowest single one.

``train_epoch`` and ``scoring_scale`` generate their image folder once (scripts/bench_data.py: 2048
grayscale JPEGs of 512 px) under ``--data-dir`` (default ~/.cache/hf_gazecons/bench). Peers that are not installed are
reported as ``null``. Random-init models only (no downloads).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:  # the bench_* modules beside it (tests load this file by its path)
    sys.path.insert(0, str(SCRIPTS))

from bench_cam_methods import bench_cam_methods, scorecam_memory_probe  # noqa: E402
from bench_common import GOALS, REPO_ROOT, device_info, goals_met  # noqa: E402  (also: the repo root on the path)
from bench_faithfulness import bench_faithfulness  # noqa: E402
from bench_gradcam import bench_gradcam, bench_memory, memory_probe  # noqa: E402
from bench_report import NOTES, print_report  # noqa: E402
from bench_scoring import bench_dataset_scoring, bench_scoring_scale, scoring_memory_probe  # noqa: E402
from bench_training import bench_train_epoch, bench_train_step  # noqa: E402

_CHEST_XRAYS = {"model": "resnet18", "size": 224, "batch": 32, "n_images": 2048, "image_px": 512, "workers": 2}
"""What train_epoch and scoring_scale share: the model and the generated image folder they read."""
_TINY_FOLDER = {"model": "test_resnet", "size": 64, "batch": 8, "n_images": 48, "image_px": 96, "workers": 1}
_FAITHFULNESS = {"model": "resnet18", "grid": 7, "steps": 20, "percentiles": [10, 20, 30, 40, 50, 60, 70, 80, 90]}
"""torchcam's and pytorch-grad-cam's defaults; resnet18's 7 x 7 map at 224 px."""
_CAM_METHODS = {"model": "resnet18", "size": 224, "batch": 32}
"""The comparison's setting: resnet18 at 224 px, batch 32; Score-CAM on the first ``scorecam_images`` of the batch."""

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "gradcam": {"model": "resnet18", "size": 224, "batch": 32, "reps": 10},
        "memory": {"model": "resnet18", "size": 224, "batch": 32},
        "dataset_scoring": {
            "model": "resnet18",
            "size": 128,
            "n_images": 256,
            "batch": 32,
            "num_classes": 4,
            "reps": 5,
        },  # fmt: skip
        "train_step": {
            "model": "resnet18", "size": 112, "batches": [8, 32, 128], "num_classes": 4, "reps": 5, "lam": 100.0,
            "exact_batches": [8, 32, 128], "exact_reps": 2,
        },  # fmt: skip
        "train_epoch": {
            **_CHEST_XRAYS,
            "lam": 100.0,
            "n_train": 1792,
            "warmup_steps": 2,
            "reps": 2,
            "loader_images": 256,
        },
        "scoring_scale": {
            **_CHEST_XRAYS,
            "grid": [14, 14],
            "per_rep": 2048,
            "reps": 3,
            "rss_small": 2000,
            "rss_large": 20000,
        },
        "cli_help": {"reps": 5},
        "faithfulness": {**_FAITHFULNESS, "size": 224, "batch": 32, "reps": 2, "road_reps": 1},
        "cam_methods": {**_CAM_METHODS, "reps": 5, "scorecam_images": 2, "scorecam_reps": 3},
    },
    "quick": {
        "gradcam": {"model": "resnet18", "size": 224, "batch": 32, "reps": 5},
        "memory": {"model": "resnet18", "size": 224, "batch": 32},
        "dataset_scoring": {
            "model": "resnet18",
            "size": 128,
            "n_images": 96,
            "batch": 32,
            "num_classes": 4,
            "reps": 3,
        },  # fmt: skip
        "train_step": {
            "model": "resnet18", "size": 112, "batches": [8, 32, 128], "num_classes": 4, "reps": 3, "lam": 100.0,
            "exact_batches": [8, 32], "exact_reps": 1,
        },  # fmt: skip
        "train_epoch": {
            **_CHEST_XRAYS,
            "lam": 100.0,
            "n_train": 320,
            "warmup_steps": 1,
            "reps": 3,
            "loader_images": 128,
        },
        "scoring_scale": {
            **_CHEST_XRAYS,
            "grid": [14, 14],
            "per_rep": 512,
            "reps": 3,
            "rss_small": 500,
            "rss_large": 5000,
        },
        "cli_help": {"reps": 3},
        "faithfulness": {**_FAITHFULNESS, "size": 112, "batch": 8, "grid": 4, "reps": 2, "road_reps": 1},
        "cam_methods": {**_CAM_METHODS, "reps": 3, "scorecam_images": 1, "scorecam_reps": 2},
    },
    "tiny": {  # for tests/test_bench.py: the code paths and the schema, not the numbers
        "gradcam": {"model": "test_resnet", "size": 96, "batch": 4, "reps": 2},
        "memory": {"model": "test_resnet", "size": 96, "batch": 4},
        "dataset_scoring": {
            "model": "test_resnet",
            "size": 96,
            "n_images": 24,
            "batch": 8,
            "num_classes": 4,
            "reps": 2,
        },  # fmt: skip
        "train_step": {
            "model": "test_resnet", "size": 96, "batches": [4, 8], "num_classes": 4, "reps": 2, "lam": 100.0,
            "exact_batches": [4, 8], "exact_reps": 1,
        },  # fmt: skip
        "train_epoch": {**_TINY_FOLDER, "lam": 100.0, "n_train": 24, "warmup_steps": 1, "reps": 1, "loader_images": 8},
        "scoring_scale": {**_TINY_FOLDER, "grid": [3, 3], "per_rep": 32, "reps": 2, "rss_small": 16, "rss_large": 64},
        "cli_help": {"reps": 1},
        "faithfulness": {
            **_FAITHFULNESS, "model": "test_resnet", "size": 32, "batch": 2, "grid": 3, "steps": 5, "percentiles": [50],
            "reps": 1, "road_reps": 1,
        },  # fmt: skip
        "cam_methods": {"model": "test_resnet", "size": 96, "batch": 4, "reps": 1, "scorecam_images": 1,
                        "scorecam_reps": 1},  # fmt: skip
    },
}


def bench_cli_help(reps: int, device: torch.device) -> dict[str, Any]:
    """Wall time of fresh ``python -m hf_gazecons.cli.main`` processes (what the console script runs):
    ``train --help`` with an empty help cache (it imports torch and transformers to build the help,
    then caches it), ``train --help`` again (from the cache), and the top-level ``--help``."""

    def seconds(argv: list[str], env: dict[str, str]) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hf_gazecons.cli.main", *argv], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache, "PYTHONPATH": str(REPO_ROOT)}
        cold = seconds(["train", "--help"], env)
        cached = statistics.median(seconds(["train", "--help"], env) for _ in range(reps))
        top = statistics.median(seconds(["--help"], env) for _ in range(reps))
    values = {"train_help_cold_s": cold, "train_help_cached_s": cached, "help_s": top}
    return {**values, "met": goals_met("cli_help", values)}


SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "gradcam": bench_gradcam,
    "memory": bench_memory,
    "dataset_scoring": bench_dataset_scoring,
    "train_step": bench_train_step,
    "train_epoch": bench_train_epoch,
    "scoring_scale": bench_scoring_scale,
    "cli_help": bench_cli_help,
    "faithfulness": bench_faithfulness,
    "cam_methods": bench_cam_methods,
}
DATA_SECTIONS = ("train_epoch", "scoring_scale")  # read the generated image folder


def run_benchmark(
    profile: str, device: torch.device, sections: list[str] | None = None, data_dir: str | None = None
) -> dict[str, Any]:
    """All (or the named) sections with the settings of ``profile``; the JSON report as a dict.
    ``data_dir``: where the data sections generate and cache their image folder."""
    settings = copy.deepcopy(PROFILES[profile])
    sections = sections or list(GOALS)
    report: dict[str, Any] = {"device": device_info(device), "settings": {"profile": profile}, "goals": GOALS}
    for section in sections:
        started = time.perf_counter()
        print(f"... {section}", file=sys.stderr, flush=True)
        options = {"data_dir": data_dir} if section in DATA_SECTIONS else {}
        result = SECTIONS[section](**settings[section], **options, device=device)
        settings[section]["seconds_taken"] = round(time.perf_counter() - started, 1)
        report[section] = result
        settings[section].update(result.pop("_extra", {}))  # what the section reports about how it ran
        settings[section]["notes"] = NOTES[section]
    report["settings"] = {"profile": profile, **{k: v for k, v in settings.items() if k in sections}}
    report["met"] = {section: report[section]["met"] for section in sections}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, fewer images (see the docstring)")
    parser.add_argument("--output", type=Path, help="write the JSON report here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: tiny models and data
    parser.add_argument(
        "--sections", nargs="+", choices=list(GOALS), metavar="NAME", help=f"run only these: {', '.join(GOALS)}"
    )
    parser.add_argument(
        "--data-dir",
        help="where train_epoch and scoring_scale generate (once) and cache their image folder "
        "(default: ~/.cache/hf_gazecons/bench)",
    )
    parser.add_argument("--_scoring-probe", dest="scoring_probe", help=argparse.SUPPRESS)  # JSON options
    parser.add_argument(
        "--_memory-probe", dest="memory_probe", choices=("ours", "inference", "captum"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--_scorecam-probe", dest="scorecam_probe", choices=("ours", "torchcam"), help=argparse.SUPPRESS
    )
    parser.add_argument("--_probe-model", dest="probe_model", help=argparse.SUPPRESS)
    parser.add_argument("--_probe-size", dest="probe_size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_probe-batch", dest="probe_batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.probe_model, args.probe_size, args.probe_batch, device)))
        return 0
    if args.scorecam_probe:
        probe = scorecam_memory_probe(args.scorecam_probe, args.probe_model, args.probe_size, args.probe_batch, device)
        print(json.dumps(probe))
        return 0
    if args.scoring_probe:
        print(json.dumps(scoring_memory_probe(**json.loads(args.scoring_probe), device=device)))
        return 0

    profile = "tiny" if args.tiny else "quick" if args.quick else "full"
    report = run_benchmark(profile, device, args.sections, args.data_dir)
    print_report(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
