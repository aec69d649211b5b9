"""Benchmark hf_gazecons against the usual ways of computing Grad-CAM, the study's metric and training.

    python scripts/bench.py --quick --output bench.json          # smaller data sets, fewer repetitions
    python scripts/bench.py --output bench.json                  # full settings
    python scripts/bench.py --quick --sections train_epoch scoring_scale --output bench.json
    python scripts/bench.py --device cuda --output bench.json    # (scripts/gpu_check.py: the GPU check)

``--sections NAME ...`` runs only the named sections. Seven sections, each timed IN ONE RUN with
interleaved repetitions (every repetition times every contender once, in rotating order, after a
warm-up; medians are reported):

* ``gradcam``         — one Grad-CAM batch: ours vs a no-grad forward, pytorch-grad-cam, captum and
                        torchcam, with a check that all of them compute the same maps;
* ``memory``          — peak memory growth of one batch (ours, plain inference, captum), each in a
                        fresh subprocess;
* ``dataset_scoring`` — ``gaze_consistency`` (one pass) vs the study's way (prediction pass, then a
                        full-backward Grad-CAM pass per class over its correct samples), same L_CAM;
* ``train_step``      — a plain cross-entropy optimizer step vs the consistency-regularised step;
* ``train_epoch``     — images/s of training epochs on an image folder shaped like the study's chest
                        X-rays: GazeConsistencyTrainer (lambda > 0) vs the plain transformers Trainer vs
                        a hand-written timm loop, same images, same loader workers;
* ``scoring_scale``   — ``gaze_consistency`` images/s (with and without ``--grid``) vs no-grad
                        inference over the same DataLoader, and the peak resident memory of scoring a
                        small and a 10x larger stream, each in a fresh subprocess;
* ``cli_help``        — ``hf-gazecons train --help`` (first call, which builds and caches it, then
                        from the cache) and ``hf-gazecons --help``, each a fresh process.

``train_epoch`` and ``scoring_scale`` generate their image folder once (scripts/bench_data.py: 2048
grayscale JPEGs of 512 px) under ``--data-dir`` (default ~/.cache/hf_gazecons/bench). Peers that are not installed are
reported as ``null``. Random-init models only (no downloads).
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "scripts"):  # run from a checkout without installing; bench_data beside
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import timm  # noqa: E402

from hf_gazecons.cam import GradCAM  # noqa: E402
from hf_gazecons.metric import gaze_consistency  # noqa: E402
from hf_gazecons.regularizer import GazeConsistencyLoss  # noqa: E402

EPS = 1e-8  # SPEC section 1: the min-max epsilon every contender's maps are normalised with
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
    "train_step": {"overhead": {"op": "<=", "value": 1.10}},
    "train_epoch": {"ratio_vs_timm_loop": {"op": ">=", "value": 0.90}},
    "scoring_scale": {
        "rss_growth": {"op": "<=", "value": 1.10},
        "throughput_ratio": {"op": ">=", "value": 0.90},
        "throughput_ratio_grid": {"op": ">=", "value": 0.90},
    },
    "cli_help": {"train_help_cached_s": {"op": "<=", "value": 2.0}},
}

_CHEST_XRAYS = {"model": "resnet18", "size": 224, "batch": 32, "n_images": 2048, "image_px": 512, "workers": 2}
"""What train_epoch and scoring_scale share: the model and the generated image folder they read."""
_TINY_FOLDER = {"model": "test_resnet", "size": 64, "batch": 8, "n_images": 48, "image_px": 96, "workers": 1}

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
        "train_step": {"model": "resnet18", "size": 112, "batch": 32, "num_classes": 4, "reps": 10, "lam": 100.0},
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
        "train_step": {"model": "resnet18", "size": 112, "batch": 32, "num_classes": 4, "reps": 8, "lam": 100.0},
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
        "train_step": {"model": "test_resnet", "size": 96, "batch": 8, "num_classes": 4, "reps": 2, "lam": 100.0},
        "train_epoch": {**_TINY_FOLDER, "lam": 100.0, "n_train": 24, "warmup_steps": 1, "reps": 1, "loader_images": 8},
        "scoring_scale": {**_TINY_FOLDER, "grid": [3, 3], "per_rep": 32, "reps": 2, "rss_small": 16, "rss_large": 64},
        "cli_help": {"reps": 1},
    },
}


# --------------------------------------------------------------------------------------------
# shared helpers


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
    """Per-sample min-max of (B, H, W) maps, as SPEC section 1 (written here, not imported)."""
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


# --------------------------------------------------------------------------------------------
# section 1: one Grad-CAM batch


def bench_gradcam(model: str, size: int, batch: int, reps: int, device: torch.device) -> dict[str, Any]:
    """Ours vs a no-grad forward and the peer libraries on one batch, same model and input.

    Every contender explains the predicted class. The peers get the predicted classes computed
    beforehand (an untimed forward: a free prediction pass in their favour); ours takes them from
    its own forward. pytorch-grad-cam and torchcam are built per call with ``with`` (their
    documented use), so their hooks do not run during the other contenders' forwards.
    """
    torch.manual_seed(0)
    net = create_model(model, device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        predicted = net(x).argmax(dim=1)

    ours = GradCAM(net)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    contenders: dict[str, Callable[[], Any]] = {"forward": forward, "ours": lambda: ours(x).maps}
    peer_maps: dict[str, Callable[[], torch.Tensor]] = {}  # a peer's raw map, normalised like ours

    if peer_available("pytorch_grad_cam"):
        from pytorch_grad_cam import GradCAM as PGCGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        pgc_targets = [ClassifierOutputTarget(int(c)) for c in predicted]

        def pytorch_grad_cam() -> Any:
            with PGCGradCAM(model=net, target_layers=[net.layer4[-1]]) as cam:
                return cam(input_tensor=x, targets=pgc_targets)  # (B, H, W) maps resized to the input

        def pytorch_grad_cam_maps() -> torch.Tensor:
            # its output is resized to the input and min-maxed with eps 1e-7; compare at the
            # target's resolution instead: its own Grad-CAM of the stored activations/gradients
            with PGCGradCAM(model=net, target_layers=[net.layer4[-1]]) as cam:
                cam(input_tensor=x, targets=pgc_targets)
                store = cam.activations_and_grads
                activations, gradients = (t[0].cpu().numpy() for t in (store.activations, store.gradients))
                raw = cam.get_cam_image(x, net.layer4[-1], pgc_targets, activations, gradients)
            return normalize(F.relu(torch.as_tensor(raw)))

        contenders["pytorch_grad_cam"] = pytorch_grad_cam
        peer_maps["pytorch_grad_cam"] = pytorch_grad_cam_maps

    if peer_available("captum"):
        from captum.attr import LayerGradCam

        layer_gradcam = LayerGradCam(net, net.layer4)

        def captum() -> torch.Tensor:
            attribution = layer_gradcam.attribute(x, target=predicted, relu_attributions=True)
            return normalize(attribution[:, 0].detach())

        contenders["captum"] = captum
        peer_maps["captum"] = captum

    if peer_available("torchcam"):
        from torchcam.methods import GradCAM as TorchCAMGradCAM

        classes = predicted.tolist()

        def torchcam() -> torch.Tensor:
            with TorchCAMGradCAM(net, "layer4", input_shape=(3, size, size)) as extractor:
                scores = net(x)
                (cam,) = extractor(class_idx=classes, scores=scores, normalized=False)
            return normalize(cam)

        contenders["torchcam"] = torchcam
        peer_maps["torchcam"] = torchcam

    medians = timeit_interleaved(contenders, reps, sync=lambda: synchronize(device))

    our_maps = ours(x).maps.cpu()
    result: dict[str, Any] = {
        "forward_s": medians["forward"],
        "ours_s": medians["ours"],
        **{f"{peer}_s": medians.get(peer) for peer in PEERS},
        "ratio_vs_forward": ratio(medians["ours"], medians["forward"]),
        **{f"speedup_vs_{peer}": ratio(medians.get(peer), medians["ours"]) for peer in PEERS},
    }
    for peer in PEERS:
        if peer in peer_maps:
            result[f"max_abs_diff_vs_{peer}"] = float((peer_maps[peer]().cpu().float() - our_maps).abs().max())
        else:
            result[f"max_abs_diff_vs_{peer}"] = None
    result["met"] = goals_met("gradcam", result)
    return result


# --------------------------------------------------------------------------------------------
# section 2: peak memory of one batch, each in a fresh process


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_probe(kind: str, model: str, size: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Build the model and the batch, warm the code path up on ONE image, then measure the peak
    memory growth of running ``kind`` once on the batch. Meant to run in a fresh process."""
    torch.manual_seed(0)
    net = create_model(model, device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    if kind == "ours":
        cam = GradCAM(net)

        def run(inputs: torch.Tensor) -> Any:
            return cam(inputs).maps
    elif kind == "inference":

        def run(inputs: torch.Tensor) -> Any:
            with torch.no_grad():
                return net(inputs)
    elif kind == "captum":
        from captum.attr import LayerGradCam

        layer_gradcam = LayerGradCam(net, net.layer4)

        def run(inputs: torch.Tensor) -> Any:  # the class does not change the memory: class 0
            return normalize(layer_gradcam.attribute(inputs, target=0, relu_attributions=True)[:, 0].detach())
    else:
        raise ValueError(f"unknown memory probe {kind!r}")

    run(x[:1])
    growth, method = peak_growth(lambda: run(x), device)
    return {"kind": kind, "mb": growth / 2**20, "method": method}


def peak_growth(run: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """Peak memory growth (bytes) while ``run()`` runs, and how it was measured: the CUDA
    allocator's peak on a GPU, else the process's resident-set high-water mark."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        out = run()
        synchronize(device)
        growth = torch.cuda.max_memory_allocated(device) - baseline
        method = "torch.cuda.max_memory_allocated"
    elif _reset_peak_rss():
        baseline = _proc_status_kb("VmRSS") * 1024
        out = run()
        growth = _proc_status_kb("VmHWM") * 1024 - baseline
        method = "VmHWM after clear_refs=5, minus VmRSS before"
    else:  # no resettable high-water mark: ru_maxrss (includes everything before; approximate)
        import resource

        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out = run()
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
        method = "ru_maxrss delta (approximate)"
    del out
    return max(growth, 0), method


def _run_probe(kind: str, model: str, size: int, batch: int, device: torch.device) -> dict[str, Any]:
    options = ["--_probe-model", model, "--_probe-size", str(size), "--_probe-batch", str(batch)]
    (result,) = run_in_fresh_processes([["--_memory-probe", kind, *options]], device)
    return result


def run_in_fresh_processes(argument_lists: list[list[str]], device: torch.device) -> list[dict[str, Any]]:
    """Run this script once per argument list (a probe), each in a new process, all at once (they
    measure memory, not time); the JSON of each one's last line."""
    running = []
    for arguments in argument_lists:
        command = [
            sys.executable, str(Path(__file__).resolve()), *arguments, "--device", device.type,
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


def bench_memory(model: str, size: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Peak memory growth (MiB) of one batch: ours, a no-grad inference forward, captum."""
    ours = _run_probe("ours", model, size, batch, device)
    inference = _run_probe("inference", model, size, batch, device)
    captum = _run_probe("captum", model, size, batch, device) if peer_available("captum") else None
    result: dict[str, Any] = {
        "ours_mb": ours["mb"],
        "inference_mb": inference["mb"],
        "captum_mb": None if captum is None else captum["mb"],
        "ratio_vs_inference": ratio(ours["mb"], inference["mb"]),
        "ratio_vs_captum": ratio(ours["mb"], None if captum is None else captum["mb"]),
    }
    result["met"] = goals_met("memory", result)
    result["_extra"] = {"method": ours["method"]}  # moved into the settings by run_benchmark()
    return result


# --------------------------------------------------------------------------------------------
# section 3: scoring a data set


def study_way_consistency(
    net: torch.nn.Module, target: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int
) -> float | None:
    """L_CAM (paper variant) as the study computes it: a prediction pass over the data; then per
    class a second pass over its correctly classified samples, each batch a full forward and
    ``.backward()`` into the whole model with hooks on ``target``; every map stored, then the
    class mean and the distances."""
    device = next(net.parameters()).device
    net.eval()
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    with torch.no_grad():
        predicted = torch.cat([net(x.to(device)).argmax(dim=1).cpu() for x, _ in batches])
    correct = predicted == labels

    store: dict[str, torch.Tensor] = {}

    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        store["A"] = output
        output.register_hook(lambda grad: store.__setitem__("G", grad))

    handle = target.register_forward_hook(hook)
    total, count = 0.0, 0
    try:
        for c in labels.unique().tolist():
            index = ((labels == c) & correct).nonzero()[:, 0]
            if len(index) < 2:
                continue
            maps = []
            for chunk in index.split(batch_size):
                net.zero_grad()
                logits = net(images[chunk].to(device))
                logits[:, c].sum().backward()
                activations, gradients = store["A"].detach(), store["G"]
                weights = gradients.mean(dim=(2, 3), keepdim=True)
                maps.append(normalize(F.relu((weights * activations).sum(dim=1))).cpu())
            class_maps = torch.cat(maps).double()
            deviations = (class_maps - class_maps.mean(dim=0)).flatten(1).pow(2).mean(dim=1)
            total += float(deviations.sum())
            count += len(class_maps)
    finally:
        handle.remove()
        net.zero_grad()
    return total / count if count else None


def make_dataset(
    net: torch.nn.Module, n_images: int, size: int, batch: int, num_classes: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random images, labelled with the model's own prediction for 3 of 4 samples and a wrong class
    for every 4th, so some samples are misclassified (excluded) and the correct ones exist."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(n_images, 3, size, size, generator=generator)
    with torch.no_grad():
        predicted = torch.cat([net.eval()(x.to(device)).argmax(dim=1).cpu() for x in images.split(batch)])
    labels = predicted.clone()
    labels[::4] = (labels[::4] + 1) % num_classes
    return list(zip(images.split(batch), labels.split(batch)))


def bench_dataset_scoring(
    model: str, size: int, n_images: int, batch: int, num_classes: int, reps: int, device: torch.device
) -> dict[str, Any]:
    """``gaze_consistency`` (one pass) vs the study's way, same model, data and L_CAM."""
    torch.manual_seed(0)
    net = create_model(model, device, num_classes).eval()
    batches = make_dataset(net, n_images, size, batch, num_classes, device)
    values: dict[str, float | None] = {}

    def ours() -> None:
        values["ours"] = gaze_consistency(net, batches, batch_size=batch, progress=False).value

    def study_way() -> None:
        values["study_way"] = study_way_consistency(net, net.layer4, batches, batch)

    medians = timeit_interleaved({"ours": ours, "study_way": study_way}, reps, sync=lambda: synchronize(device))
    agree = (
        values["ours"] is not None
        and values["study_way"] is not None
        and abs(values["ours"] - values["study_way"]) <= VALUE_TOLERANCE
    )
    result: dict[str, Any] = {
        "ours_s": medians["ours"],
        "study_way_s": medians["study_way"],
        "speedup": ratio(medians["study_way"], medians["ours"]),
        "values_agree": bool(agree),
        "ours_value": values["ours"],
        "study_way_value": values["study_way"],
    }
    result["met"] = goals_met("dataset_scoring", result)
    return result


# --------------------------------------------------------------------------------------------
# section 4: one training step


def bench_train_step(
    model: str, size: int, batch: int, num_classes: int, reps: int, lam: float, device: torch.device, warmup: int = 3
) -> dict[str, Any]:
    """A plain cross-entropy Adam step vs the regularised step (CE + lam * L_CAM^train).

    Labels are the train-mode predictions of the initial model on the batch, so at the start every
    sample is correctly classified and the penalty is active; both contenders then take ``warmup``
    untimed steps on the same batch (most samples stay correct: the count that took part in the
    last step is reported). Each contender trains its own copy of the same initial model with its
    own Adam optimiser.
    """
    torch.manual_seed(0)
    base = create_model(model, device, num_classes).train()
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        labels = base(x).argmax(dim=1)

    plain_net = copy.deepcopy(base)
    plain_opt = torch.optim.Adam(plain_net.parameters(), lr=1e-4)
    last: dict[str, Any] = {}

    def plain() -> None:
        loss = F.cross_entropy(plain_net(x), labels)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    def regularised_step(target: int | None) -> Callable[[], None]:
        net = copy.deepcopy(base)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        cam = GradCAM(net, target, differentiable=True)
        penalty = GazeConsistencyLoss(num_classes).to(device)

        def step() -> None:
            out = cam(x, targets=labels)
            term = penalty(out.maps, out.logits, labels)
            loss = F.cross_entropy(out.logits, labels) + lam * term.loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            last[target] = {"samples": term.n_samples, "classes": term.n_classes, "batch": batch}

        return step

    medians = timeit_interleaved(
        {"plain": plain, "regularised": regularised_step(None), "regularised_stage": regularised_step(-2)},
        reps,
        warmup=warmup,
        sync=lambda: synchronize(device),
    )
    result: dict[str, Any] = {
        "plain_s": medians["plain"],
        "regularised_s": medians["regularised"],
        "overhead": ratio(medians["regularised"], medians["plain"]),
        "regularised_stage_s": medians["regularised_stage"],
        "overhead_stage": ratio(medians["regularised_stage"], medians["plain"]),
    }
    result["met"] = goals_met("train_step", result)
    result["_extra"] = {"penalty": {"default target": last[None], "stage -2": last[-2]}}
    return result


# --------------------------------------------------------------------------------------------
# section 5: one training epoch on an image folder shaped like the study's chest X-rays


class WithLoss(torch.nn.Module):
    """A timm classifier as the plain transformers ``Trainer`` wants it: the loss when given labels."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(pixel_values)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def bench_folder(data_dir: str | None, n_images: int, image_px: int) -> Path:
    """The benchmark's chest-X-ray-like image folder (generated on the first use, then cached)."""
    from bench_data import DEFAULT_ROOT, chest_like_folder

    return chest_like_folder(Path(data_dir) if data_dir else DEFAULT_ROOT, n_images=n_images, size=image_px)


def trainer_arguments(cls: type, output_dir: str, device: torch.device, precision: str, **options: Any) -> Any:
    """The ``TrainingArguments`` (or subclass) every timed Trainer gets: no evaluation, no
    checkpoints, constant lr 1e-4, AdamW without decay, one log per epoch, bf16 when asked."""
    return cls(
        output_dir,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="epoch",
        lr_scheduler_type="constant",
        learning_rate=1e-4,
        weight_decay=0.0,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        use_cpu=device.type == "cpu",
        bf16=precision == "bf16",
        dataloader_pin_memory=device.type == "cuda",
        **options,
    )


def quiet(trainer: Any) -> Any:
    """``trainer`` without the callback that prints every log (``disable_tqdm`` turns it on)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def timm_training_loop(
    net: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    batch: int,
    workers: int,
    device: torch.device,
    precision: str,
    epochs: int = 1,
    max_steps: int | None = None,
) -> Callable[[], int]:
    """A minimal hand-written loop (what a timm user writes): shuffled DataLoader, AdamW lr 1e-4,
    cross-entropy, bf16 autocast when asked. Returns the function that trains (and counts steps)."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.0)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )

    def run() -> int:
        steps = 0
        net.train()
        for _ in range(epochs):
            for images, labels in loader:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = F.cross_entropy(net(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    return steps
        return steps

    return run


def loader_rate(dataset: torch.utils.data.Dataset, n_images: int, batch: int) -> float:
    """Images/s of reading and transforming ``n_images`` items in the main process (no workers)."""
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n_images)), batch_size=batch)
    start = time.perf_counter()
    for _ in loader:
        pass
    return n_images / (time.perf_counter() - start)


def bench_train_epoch(
    model: str,
    size: int,
    batch: int,
    n_images: int,
    image_px: int,
    n_train: int,
    workers: int,
    lam: float,
    warmup_steps: int,
    reps: int,
    loader_images: int,
    device: torch.device,
    data_dir: str | None = None,
    precision: str = "fp32",
    epochs: int = 1,
) -> dict[str, Any]:
    """Images/s of training epochs: ``GazeConsistencyTrainer`` (lambda ``lam`` from the first step),
    the plain transformers ``Trainer`` and a hand-written timm loop, on the same images.

    Data: ``n_train`` training images of the chest-X-ray-like folder (``select_subset``, as
    ``--max_train_samples`` picks them), 1 channel, ``size`` px, the study's augmentation. The two
    Trainers read them as ``hf_gazecons.finetune.train`` does (``load_image_dataset`` and
    ``ImageClassificationDataset``); the timm loop reads the same files with ``timm.data.ImageDataset``
    and the same timm transform. All use ``workers`` loader processes, batch ``batch``, AdamW lr
    1e-4 without decay, the same initial weights. Each contender first takes ``warmup_steps``
    untimed steps (its own copy), then a fresh copy trains ``epochs`` timed epochs; ``reps``
    repetitions in rotating order, medians.
    """
    import datasets as hf_datasets
    from transformers import Trainer, TrainingArguments

    from hf_gazecons.data import ImageClassificationDataset, load_image_dataset, select_subset
    from hf_gazecons.models import load_model
    from hf_gazecons.trainer import GazeConsistencyTrainer, GazeConsistencyTrainingArguments

    folder = bench_folder(data_dir, n_images, image_px)
    rows = select_subset(load_image_dataset(str(folder), "train"), n_train, seed=0)
    names = list(rows.features["label"].names)
    torch.manual_seed(0)
    loaded = load_model(model, label_names=names, image_size=size, grayscale=True)
    base, prep = loaded.model.to(device), loaded.preprocessing
    train_items = ImageClassificationDataset.with_preprocessing(rows, prep, train=True)
    chosen = {value["path"] for value in rows.cast_column("image", hf_datasets.Image(decode=False))["image"]}
    timm_all = timm.data.ImageDataset(str(folder / "train"), input_img_mode=prep.mode, transform=prep.train_transform)
    timm_items = torch.utils.data.Subset(
        timm_all, [i for i, (path, _) in enumerate(timm_all.reader.samples) if path in chosen]
    )
    if len(timm_items) != len(rows):
        raise RuntimeError(f"the timm loop would read {len(timm_items)} images, the Trainers {len(rows)}")
    scratch = tempfile.TemporaryDirectory(prefix="hf_gazecons_bench_")
    penalty: dict[str, Any] = {}

    def gazecons(max_steps: int = -1) -> Callable[[], Any]:
        args = trainer_arguments(
            GazeConsistencyTrainingArguments, scratch.name, device, precision, lambda_max=lam, t0=0, t1=1,
            num_train_epochs=epochs, max_steps=max_steps, per_device_train_batch_size=batch,
            dataloader_num_workers=workers,
        )  # fmt: skip
        trainer = quiet(
            GazeConsistencyTrainer(model=copy.deepcopy(base), args=args, train_dataset=train_items, label_names=names)
        )

        def run() -> None:
            trainer.train()
            for entry in trainer.state.log_history:  # the epoch's log: did the penalty take part?
                penalty.update({k: entry[k] for k in ("lambda", "penalty_samples", "penalty_classes") if k in entry})

        return run

    def plain_trainer(max_steps: int = -1) -> Callable[[], Any]:
        args = trainer_arguments(
            TrainingArguments, scratch.name, device, precision, num_train_epochs=epochs, max_steps=max_steps,
            per_device_train_batch_size=batch, dataloader_num_workers=workers,
        )  # fmt: skip
        return quiet(Trainer(model=WithLoss(copy.deepcopy(base)), args=args, train_dataset=train_items)).train

    def timm_loop(max_steps: int | None = None) -> Callable[[], Any]:
        return timm_training_loop(
            copy.deepcopy(base), timm_items, batch, workers, device, precision, epochs=epochs, max_steps=max_steps
        )

    builders = {"gazecons": gazecons, "trainer": plain_trainer, "timm_loop": timm_loop}
    with scratch:
        if warmup_steps:
            for build in builders.values():
                build(max_steps=warmup_steps)()
        medians = timeit_interleaved(builders, reps, warmup=0, sync=lambda: synchronize(device), prepare=True)
    rate = {name: epochs * len(rows) / seconds for name, seconds in medians.items()}
    n_loader = min(loader_images, len(rows))
    result: dict[str, Any] = {
        "gazecons_images_per_s": rate["gazecons"],
        "trainer_images_per_s": rate["trainer"],
        "timm_loop_images_per_s": rate["timm_loop"],
        "ratio_vs_timm_loop": ratio(rate["gazecons"], rate["timm_loop"]),
        "ratio_vs_trainer": ratio(rate["gazecons"], rate["trainer"]),
        "loader_images_per_s": loader_rate(train_items, n_loader, batch),
        "timm_loader_images_per_s": loader_rate(timm_items, n_loader, batch),
    }
    result["met"] = goals_met("train_epoch", result)
    result["_extra"] = {"data": str(folder), "n_train": len(rows), "penalty": penalty}
    return result


# --------------------------------------------------------------------------------------------
# section 6: scoring many images


def scoring_data(folder: Path, n: int, streaming: bool = False) -> Any:
    """``n`` images for scoring: every image of ``folder`` in a seeded random order (the classes
    mixed, as the folder's sorted order would not), repeated as often as needed; a
    ``datasets.Dataset``, or (``streaming``) a ``datasets.IterableDataset`` over it."""
    import datasets as hf_datasets

    from hf_gazecons.data import load_image_dataset

    splits = load_image_dataset(str(folder))
    every = hf_datasets.concatenate_datasets([splits["train"], splits["validation"]]).shuffle(seed=0)
    if streaming:
        return every.to_iterable_dataset().repeat(None).take(n)
    return hf_datasets.concatenate_datasets([every] * math.ceil(n / len(every))).select(range(n))


def scoring_model(model: str, size: int, folder: Path, device: torch.device) -> Any:
    """A random-init 1-channel ``model`` at ``size`` px for the folder's classes (a LoadedModel)."""
    from hf_gazecons.models import load_model

    torch.manual_seed(0)
    loaded = load_model(model, label_names=["NORMAL", "PNEUMONIA"], image_size=size, grayscale=True)
    loaded.model.to(device).eval()
    return loaded


def scoring_memory_probe(
    model: str, size: int, batch: int, n_images: int, image_px: int, data_dir: str | None, n: int, device: torch.device
) -> dict[str, Any]:
    """The peak resident memory of a process that loads the model and scores ``n`` streamed images
    (paper variant, no loader workers, so that every byte is in this process), and how far it rose
    above the resident memory just before the scoring. Meant for a fresh process."""
    import resource

    from hf_gazecons.metric import gaze_consistency

    folder = bench_folder(data_dir, n_images, image_px)
    loaded = scoring_model(model, size, folder, device)
    stream = scoring_data(folder, n, streaming=True)
    try:
        before = _proc_status_kb("VmRSS") * 1024
    except (OSError, KeyError):
        before = None
    result = gaze_consistency(loaded, stream, batch_size=batch, progress=False)
    try:
        peak, method = _proc_status_kb("VmHWM") * 1024, "VmHWM (peak resident set of the process)"
    except (OSError, KeyError):
        peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    return {
        "n": n,
        "n_samples": result.n_samples,
        "n_correct": result.n_correct,
        "mb": peak / 2**20,
        "above_start_mb": None if before is None else (peak - before) / 2**20,
        "method": method,
    }


def bench_scoring_scale(
    model: str,
    size: int,
    batch: int,
    n_images: int,
    image_px: int,
    per_rep: int,
    reps: int,
    workers: int,
    grid: list[int],
    rss_small: int,
    rss_large: int,
    device: torch.device,
    data_dir: str | None = None,
    probes: bool = True,
) -> dict[str, Any]:
    """Scoring many images: throughput against plain inference, and memory against the data's size.

    Throughput: ``gaze_consistency`` (paper variant, without and with ``--grid``) and a no-grad
    forward over the same loader (``batch_source``: the same DataLoader over the same
    ``datasets.Dataset`` of ``per_rep`` images, ``workers`` processes), after a warm-up on two
    batches; ``reps`` interleaved repetitions, medians. Memory (``probes``): the peak resident
    memory of a fresh process that scores ``rss_small``, and of one that scores ``rss_large``
    streamed images; ``rss_growth`` is their ratio.
    """
    from hf_gazecons.batching import batch_source
    from hf_gazecons.metric import gaze_consistency

    folder = bench_folder(data_dir, n_images, image_px)
    loaded = scoring_model(model, size, folder, device)
    pin = device.type == "cuda"

    def contenders(dataset: Any) -> dict[str, Callable[[], Any]]:
        def ours(grid_size: tuple[int, int] | None) -> Callable[[], Any]:
            return lambda: gaze_consistency(
                loaded, dataset, grid=grid_size, batch_size=batch, num_workers=workers, progress=False
            )

        def inference() -> None:
            with torch.no_grad():
                for item in batch_source(dataset, loaded.preprocessing, batch, workers, pin_memory=pin):
                    loaded.model(item["pixel_values"].to(device, non_blocking=True))

        return {"paper": ours(None), "paper_grid": ours(tuple(grid)), "inference": inference}

    for run in contenders(scoring_data(folder, 2 * batch)).values():  # warm-up (first device calls)
        run()
    medians = timeit_interleaved(
        contenders(scoring_data(folder, per_rep)), reps, warmup=0, sync=lambda: synchronize(device)
    )
    rate = {name: per_rep / seconds for name, seconds in medians.items()}
    small = large = None
    if probes:
        options = {"model": model, "size": size, "batch": batch, "n_images": n_images, "image_px": image_px}
        options["data_dir"] = data_dir
        small, large = run_in_fresh_processes(
            [["--_scoring-probe", json.dumps({**options, "n": n})] for n in (rss_small, rss_large)], device
        )
    result: dict[str, Any] = {
        "paper_images_per_s": rate["paper"],
        "paper_grid_images_per_s": rate["paper_grid"],
        "inference_images_per_s": rate["inference"],
        "throughput_ratio": ratio(rate["paper"], rate["inference"]),
        "throughput_ratio_grid": ratio(rate["paper_grid"], rate["inference"]),
        "rss_small_mb": None if small is None else small["mb"],
        "rss_large_mb": None if large is None else large["mb"],
        "rss_growth": None if small is None else ratio(large["mb"], small["mb"]),
    }
    result["met"] = goals_met("scoring_scale", result)
    result["_extra"] = {"data": str(folder), "probes": [small, large]}
    return result


# --------------------------------------------------------------------------------------------
# section 7: how fast the command line answers --help


def bench_cli_help(reps: int, device: torch.device) -> dict[str, Any]:
    """Wall time of fresh ``python -m hf_gazecons.cli.main`` processes (what the console script runs):
    ``train --help`` with an empty help cache (it imports torch and transformers to build the help,
    then caches it), ``train --help`` again (from the cache), and the top-level ``--help``."""
    import tempfile

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


# --------------------------------------------------------------------------------------------
# report


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


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _goal_line(section: str, values: dict[str, Any]) -> str:
    parts = []
    for key, goal in GOALS[section].items():
        parts.append(f"{key} {_fmt(values.get(key), '.3f')} (goal {goal['op']} {goal['value']})")
    met = values.get("met")
    return "  goals: " + "; ".join(parts) + f"  -> {'met' if met else 'NOT met' if met is False else 'n/a'}"


def print_report(report: dict[str, Any]) -> None:
    settings, device = report["settings"], report["device"]
    print(
        f"\nhf_gazecons benchmark on {device['name']} ({device['type']}, {device['cpu_count']} CPUs, "
        f"{device['torch_threads']} torch threads, torch {device['torch']}); medians of interleaved repetitions"
    )
    for section, printer in (
        ("gradcam", _print_gradcam),
        ("memory", _print_memory),
        ("dataset_scoring", _print_dataset_scoring),
        ("train_step", _print_train_step),
        ("train_epoch", _print_train_epoch),
        ("scoring_scale", _print_scoring_scale),
        ("cli_help", _print_cli_help),
    ):
        if section in report:
            printer(report[section], settings[section])


def _print_gradcam(g: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[gradcam] {s['model']}, {s['size']} px, batch {s['batch']}, {s['reps']} reps")
    print(f"  {'contender':<22}{'time (s)':>10}{'vs ours':>10}{'max|diff| vs ours':>20}")
    rows = [("no-grad forward", g["forward_s"], None), ("hf_gazecons GradCAM", g["ours_s"], None)]
    rows += [(peer, g[f"{peer}_s"], g[f"max_abs_diff_vs_{peer}"]) for peer in PEERS]
    for name, seconds, diff in rows:
        print(
            f"  {name:<22}{_fmt(seconds, '.4f'):>10}{_fmt(ratio(seconds, g['ours_s']), '.2f') + 'x':>10}"
            f"{_fmt(diff, '.1e') if name in PEERS else '-':>20}"
        )
    for peer in PEERS:
        diff = g[f"max_abs_diff_vs_{peer}"]
        if diff is not None and diff > MAP_TOLERANCE:
            print(f"  WARNING: maps differ from {peer}'s by {diff:.1e} > {MAP_TOLERANCE}: different computations?")
    print(_goal_line("gradcam", g))


def _print_memory(m: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[memory] peak growth of one batch, fresh process each ({s['model']}, {s['size']} px, batch {s['batch']})")
    rows = (("hf_gazecons GradCAM", "ours_mb"), ("no-grad inference", "inference_mb"), ("captum", "captum_mb"))
    for name, key in rows:
        print(f"  {name:<22}{_fmt(m[key], '.1f'):>10} MiB")
    print(_goal_line("memory", m))


def _print_dataset_scoring(d: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"\n[dataset_scoring] {s['model']}, {s['size']} px, {s['n_images']} images, batch {s['batch']}, "
        f"{s['reps']} reps"
    )
    print(f"  {'gaze_consistency':<22}{_fmt(d['ours_s'], '.3f'):>10} s   L_CAM {_fmt(d['ours_value'], '.8f')}")
    print(f"  {'study way':<22}{_fmt(d['study_way_s'], '.3f'):>10} s   L_CAM {_fmt(d['study_way_value'], '.8f')}")
    print(f"  values agree (<= {VALUE_TOLERANCE}): {d['values_agree']}")
    print(_goal_line("dataset_scoring", d))


def _print_train_step(t: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[train_step] {s['model']}, {s['size']} px, batch {s['batch']}, lambda {s['lam']}, {s['reps']} reps")
    print(f"  {'plain CE step':<22}{_fmt(t['plain_s'], '.4f'):>10} s")
    print(f"  {'regularised step':<22}{_fmt(t['regularised_s'], '.4f'):>10} s   (default target, the head's map)")
    print(
        f"  {'regularised, stage -2':<22}{_fmt(t['regularised_stage_s'], '.4f'):>10} s   "
        f"({_fmt(t['overhead_stage'], '.2f')}x: per-sample maps through train-mode BatchNorm; no goal)"
    )
    print(_goal_line("train_step", t))


def _print_rates(rows: tuple[tuple[str, str], ...], values: dict[str, Any]) -> None:
    """One line per (label, key of ``values``): the images/s."""
    width = max(len(name) for name, _ in rows) + 2
    for name, key in rows:
        print(f"  {name:<{width}}{_fmt(values[key], '.1f'):>9} images/s")


def _print_train_epoch(t: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"\n[train_epoch] {s['model']}, {s['size']} px from {s['image_px']} px grayscale JPEGs, batch {s['batch']}, "
        f"{s['n_train']} images, {s['workers']} loader workers, {s['reps']} rep(s)"
    )
    rows = (
        (f"GazeConsistencyTrainer (lambda {s['lam']:g})", "gazecons_images_per_s"),
        ("plain transformers Trainer", "trainer_images_per_s"),
        ("hand-written timm loop", "timm_loop_images_per_s"),
    )
    _print_rates(rows, t)
    print(f"  regularised / plain Trainer: {_fmt(t['ratio_vs_trainer'], '.3f')}")
    print(
        f"  data alone, main process: ours {_fmt(t['loader_images_per_s'], '.0f')} images/s, "
        f"timm's {_fmt(t['timm_loader_images_per_s'], '.0f')} images/s"
    )
    print(_goal_line("train_epoch", t))


def _print_scoring_scale(c: dict[str, Any], s: dict[str, Any]) -> None:
    print(
        f"\n[scoring_scale] {s['model']}, {s['size']} px, batch {s['batch']}, {s['per_rep']} images x {s['reps']} "
        f"reps, {s['workers']} loader workers; memory: {s['rss_small']} vs {s['rss_large']} streamed images"
    )
    rows = (
        ("gaze_consistency (paper)", "paper_images_per_s"),
        (f"  ... with --grid {s['grid'][0]} {s['grid'][1]}", "paper_grid_images_per_s"),
        ("no-grad inference", "inference_images_per_s"),
    )
    _print_rates(rows, c)
    print(
        f"  peak RSS of the scoring process: {_fmt(c['rss_small_mb'], '.1f')} MiB for {s['rss_small']} images, "
        f"{_fmt(c['rss_large_mb'], '.1f')} MiB for {s['rss_large']}"
    )
    print(_goal_line("scoring_scale", c))


def _print_cli_help(c: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[cli_help] fresh processes, median of {s['reps']}")
    print(f"  {'train --help, first':<22}{_fmt(c['train_help_cold_s'], '.2f'):>10} s  (builds the help cache)")
    print(f"  {'train --help, cached':<22}{_fmt(c['train_help_cached_s'], '.2f'):>10} s")
    print(f"  {'--help':<22}{_fmt(c['help_s'], '.2f'):>10} s")
    print(_goal_line("cli_help", c))


NOTES: dict[str, str] = {
    "gradcam": (
        "random-init timm model in eval mode; every contender explains the predicted class (peers get it from an "
        "untimed forward); pytorch-grad-cam target model.layer4[-1], captum/torchcam model.layer4, ours "
        "forward_features (the same tensor); pytorch-grad-cam and torchcam are built per call in a with-block; "
        f"maps compared at the target resolution after min-max with eps {EPS}"
    ),
    "memory": "each probe: fresh process, model and batch built, warm-up on one image, then one batch",
    "dataset_scoring": (
        "random images; labels = the model's prediction except every 4th sample (a wrong class); paper variant; "
        "study way = prediction pass + per-class pass over correct samples with forward hooks and .backward()"
    ),
    "train_step": (
        "labels = train-mode argmax of the initial model's logits on the batch (all correct at the start); "
        "3 untimed warm-up steps; Adam lr 1e-4; each contender trains its own copy of the same initial model; "
        "'penalty' = samples/classes that took part in the last regularised step; 'regularised_stage' "
        "penalises the maps of timm stage -2, after which train-mode BatchNorm layers couple the samples, so "
        "their exact per-sample Grad-CAM needs batched vector-Jacobian products"
    ),
    "train_epoch": (
        "random-init timm model, 1 channel; the Trainers read the folder through load_image_dataset and "
        "ImageClassificationDataset (JPEGs decoded near the input size), the timm loop through "
        "timm.data.ImageDataset with the same transform; lambda from the first step (t0=0, t1=1); "
        "'penalty' = lambda and mean samples/classes per step in the penalty (GazeConsistencyTrainer's log); "
        "loader rates: reading + transforming only, in the main process"
    ),
    "scoring_scale": (
        "random-init 1-channel model; the folder's images in a seeded random order, repeated; throughput: "
        "gaze_consistency and a no-grad forward over the same batch_source DataLoader of a datasets.Dataset; "
        "memory: peak resident set (VmHWM) of a fresh process that loads the model and scores a "
        "datasets.IterableDataset stream (paper variant, no loader workers); rss_growth = large / small"
    ),
    "cli_help": "fresh python -m hf_gazecons.cli.main processes with an empty XDG_CACHE_HOME; medians of reps",
}
"""How each section measures, for the JSON report's settings."""


SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "gradcam": bench_gradcam,
    "memory": bench_memory,
    "dataset_scoring": bench_dataset_scoring,
    "train_step": bench_train_step,
    "train_epoch": bench_train_epoch,
    "scoring_scale": bench_scoring_scale,
    "cli_help": bench_cli_help,
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
