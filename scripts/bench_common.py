"""What every benchmark section shares: the goals, timing, normalisation, the peer check, memory
readings, fresh probe processes, the generated image folder and the device description.

Importing it puts the repository root on ``sys.path``, so the scripts run from a checkout without
installing (the section modules beside it, bench_gradcam.py, bench_scoring.py and bench_training.py,
import it before hf_gazecons); scripts/bench.py runs the sections.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))
BENCH_SCRIPT = Path(__file__).resolve().with_name("bench.py")
"""The script the probes re-run in fresh processes (its hidden ``--_*-probe`` options)."""

EPS = 1e-8  # docs/METHOD.md (1.4): the min-max epsilon every contender's maps are normalised with
MAP_TOLERANCE = 1e-4  # maps of different implementations must agree to this (max abs difference)
VALUE_TOLERANCE = 1e-5  # L_CAM of ours and of the study's way must agree to this (abs difference)
PEERS = ("pytorch_grad_cam", "captum", "torchcam")

GOALS: dict[str, dict[str, dict[str, Any]]] = {
    "gradcam": {
        "ratio_vs_forward": {"op": "<=", "value": 1.15},
        "speedup_vs_pytorch_grad_cam": {"op": ">=", "value": 2.5},
    },
    "memory": {"ratio_vs_inference": {"op": "<=", "value": 1.15}, "ratio_vs_captum": {"op": "<=", "value": 0.5}},
    "dataset_scoring": {"speedup": {"op": ">=", "value": 2.0}},
    "train_step": {"overhead": {"op": "<=", "value": 1.10}, "overhead_stage": {"op": "<=", "value": 1.5}},
    "train_epoch": {"ratio_vs_timm_loop": {"op": ">=", "value": 0.90}},
    "scoring_scale": {
        "rss_growth": {"op": "<=", "value": 1.10},
        "throughput_ratio": {"op": ">=", "value": 0.90},
        "throughput_ratio_grid": {"op": ">=", "value": 0.90},
    },
    "cli_help": {"train_help_cached_s": {"op": "<=", "value": 2.0}},
    "faithfulness": {
        "speedup_vs_torchcam": {"op": ">=", "value": 2.0},
        "speedup_vs_pytorch_grad_cam": {"op": ">=", "value": 10.0},
    },
    "cam_methods": {
        "max_ratio_vs_gradcam": {"op": "<=", "value": 1.15},
        "min_speedup_vs_pytorch_grad_cam": {"op": ">=", "value": 2.5},
        "scorecam_speedup_vs_torchcam": {"op": ">=", "value": 2.0},
        "scorecam_memory_ratio_vs_torchcam": {"op": "<=", "value": 1.10},
        "all_ratio_vs_slowest": {"op": "<=", "value": 1.5},
        "all_one_forward_ratio_vs_slowest": {"op": "<=", "value": 1.5},
    },
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit_interleaved(
    contenders: dict[str, Callable[[], Any]],
    reps: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    prepare: bool = False,
) -> dict[str, float]:
    """Median wall time (s) of each contender; repetition ``r`` runs them all once, the order
    rotated by ``r`` so no contender always follows the same one. ``warmup`` untimed rounds first.
    ``prepare=True``: a contender is a set-up, called untimed, that returns the function to time."""
    names = list(contenders)

    def timed(name: str) -> Callable[[], Any]:
        return contenders[name]() if prepare else contenders[name]

    for _ in range(warmup):
        for name in names:
            timed(name)()
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            run = timed(name)
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def normalize(cam: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-sample min-max of (B, H, W) maps, as docs/METHOD.md (1.4) (written here, not imported)."""
    flat = cam.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    return (cam - low) / (high - low + eps)


def peer_available(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def goals_met(section: str, values: dict[str, Any], goals: dict[str, dict[str, Any]] | None = None) -> bool | None:
    """True/False when every goal of ``section`` (in ``goals``, default GOALS) has a value; None when one is missing."""
    results = []
    for key, goal in (goals or GOALS)[section].items():
        value = values.get(key)
        if value is None:
            return None
        results.append(value <= goal["value"] if goal["op"] == "<=" else value >= goal["value"])
    return all(results)


def create_model(name: str, device: torch.device, num_classes: int | None = None) -> torch.nn.Module:
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(name, pretrained=False, **kwargs).to(device)


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def run_in_fresh_processes(argument_lists: list[list[str]], device: torch.device) -> list[dict[str, Any]]:
    """Run scripts/bench.py once per argument list (a probe), each in a new process, all at once (they
    measure memory, not time); the JSON of each one's last line."""
    running = []
    for arguments in argument_lists:
        command = [
            sys.executable, str(BENCH_SCRIPT), *arguments, "--device", device.type,
            "--threads", str(torch.get_num_threads()),
        ]  # fmt: skip
        running.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for arguments, process in zip(argument_lists, running):
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"probe {arguments[:2]} failed:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def bench_folder(data_dir: str | None, n_images: int, image_px: int) -> Path:
    """The benchmark's chest-X-ray-like image folder (generated on the first use, then cached)."""
    from bench_data import DEFAULT_ROOT, chest_like_folder

    return chest_like_folder(Path(data_dir) if data_dir else DEFAULT_ROOT, n_images=n_images, size=image_px)


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "python": platform.python_version(), "torch": torch.__version__}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
        except OSError:
            pass
        info["name"] = name
    info["cpu_count"] = os.cpu_count()
    info["torch_threads"] = torch.get_num_threads()
    versions = {}
    for package in ("timm", "grad-cam", "captum", "torchcam"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    info["versions"] = versions
    return info
