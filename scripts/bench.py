"""Benchmark hf_gazecons against the usual ways of computing Grad-CAM and the study's metric.

    python scripts/bench.py --quick --output bench.json          # ~2-3 min on 2 CPU cores
    python scripts/bench.py --output bench.json                  # full settings, ~10 min on 2 cores
    python scripts/bench.py --device cuda --output bench.json

Five sections, each timed IN ONE RUN with interleaved repetitions (every repetition times every
contender once, in rotating order, after a warm-up; medians are reported):

* ``gradcam``         — one Grad-CAM batch: ours vs a no-grad forward, pytorch-grad-cam, captum and
                        torchcam, with a check that all of them compute the same maps;
* ``memory``          — peak memory growth of one batch (ours, plain inference, captum), each in a
                        fresh subprocess;
* ``dataset_scoring`` — ``gaze_consistency`` (one pass) vs the study's way (prediction pass, then a
                        full-backward Grad-CAM pass per class over its correct samples), same L_CAM;
* ``train_step``      — a plain cross-entropy optimizer step vs the consistency-regularised step;
* ``cli_help``        — ``hf-gazecons train --help`` (first call, which builds and caches it, then
                        from the cache) and ``hf-gazecons --help``, each a fresh process.

Peers that are not installed are reported as ``null``. Random-init models only (no downloads).
"""

from __future__ import annotations

import argparse
import copy
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

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO_ROOT))

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
    "cli_help": {"train_help_cached_s": {"op": "<=", "value": 2.0}},
}

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
) -> dict[str, float]:
    """Median wall time (s) of each contender; repetition ``r`` runs them all once, the order
    rotated by ``r`` so no contender always follows the same one. ``warmup`` untimed rounds first."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            contenders[name]()
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


def goals_met(section: str, values: dict[str, Any]) -> bool | None:
    """True/False when every goal of ``section`` has a value; None when one is missing."""
    results = []
    for key, goal in GOALS[section].items():
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
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        out = run(x)
        synchronize(device)
        growth = torch.cuda.max_memory_allocated(device) - baseline
        method = "torch.cuda.max_memory_allocated"
    elif _reset_peak_rss():
        baseline = _proc_status_kb("VmRSS") * 1024
        out = run(x)
        growth = _proc_status_kb("VmHWM") * 1024 - baseline
        method = "VmHWM after clear_refs=5, minus VmRSS before"
    else:  # no resettable high-water mark: ru_maxrss (includes everything before; approximate)
        import resource

        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out = run(x)
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
        method = "ru_maxrss delta (approximate)"
    del out
    return {"kind": kind, "mb": max(growth, 0) / 2**20, "method": method}


def _run_probe(kind: str, model: str, size: int, batch: int, device: torch.device) -> dict[str, Any]:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--_memory-probe", kind, "--device", device.type,
        "--_probe-model", model, "--_probe-size", str(size), "--_probe-batch", str(batch),
        "--threads", str(torch.get_num_threads()),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {kind!r} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    result["_method"] = ours["method"]  # moved into settings by main()
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
    result["_penalty"] = {"default target": last[None], "stage -2": last[-2]}
    return result


# --------------------------------------------------------------------------------------------
# section 5: how fast the command line answers --help


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


def _print_cli_help(c: dict[str, Any], s: dict[str, Any]) -> None:
    print(f"\n[cli_help] fresh processes, median of {s['reps']}")
    print(f"  {'train --help, first':<22}{_fmt(c['train_help_cold_s'], '.2f'):>10} s  (builds the help cache)")
    print(f"  {'train --help, cached':<22}{_fmt(c['train_help_cached_s'], '.2f'):>10} s")
    print(f"  {'--help':<22}{_fmt(c['help_s'], '.2f'):>10} s")
    print(_goal_line("cli_help", c))


def run_benchmark(profile: str, device: torch.device, sections: list[str] | None = None) -> dict[str, Any]:
    """All (or the named) sections with the settings of ``profile``; the JSON report as a dict."""
    settings = copy.deepcopy(PROFILES[profile])
    sections = sections or list(GOALS)
    functions = {
        "gradcam": bench_gradcam,
        "memory": bench_memory,
        "dataset_scoring": bench_dataset_scoring,
        "train_step": bench_train_step,
        "cli_help": bench_cli_help,
    }
    report: dict[str, Any] = {"device": device_info(device), "settings": {"profile": profile}, "goals": GOALS}
    for section in sections:
        started = time.perf_counter()
        print(f"... {section}", file=sys.stderr, flush=True)
        result = functions[section](**settings[section], device=device)
        settings[section]["seconds_taken"] = round(time.perf_counter() - started, 1)
        report[section] = result
    if "gradcam" in sections:
        settings["gradcam"]["notes"] = (
            "random-init timm model in eval mode; every contender explains the predicted class (peers get it from an "
            "untimed forward); pytorch-grad-cam target model.layer4[-1], captum/torchcam model.layer4, ours "
            "forward_features (the same tensor); pytorch-grad-cam and torchcam are built per call in a with-block; "
            f"maps compared at the target resolution after min-max with eps {EPS}"
        )
    if "memory" in sections:
        settings["memory"]["method"] = report["memory"].pop("_method")
        settings["memory"]["notes"] = (
            "each probe: fresh process, model and batch built, warm-up on one image, then one batch"
        )
    if "dataset_scoring" in sections:
        settings["dataset_scoring"]["notes"] = (
            "random images; labels = the model's prediction except every 4th sample (a wrong class); paper variant; "
            "study way = prediction pass + per-class pass over correct samples with forward hooks and .backward()"
        )
    if "train_step" in sections:
        settings["train_step"]["penalty"] = report["train_step"].pop("_penalty")
        settings["train_step"]["notes"] = (
            "labels = train-mode argmax of the initial model's logits on the batch (all correct at the start); "
            "3 untimed warm-up steps; Adam lr 1e-4; each contender trains its own copy of the same initial model; "
            "'penalty' = samples/classes that took part in the last regularised step; 'regularised_stage' "
            "penalises the maps of timm stage -2, after which train-mode BatchNorm layers couple the samples, so "
            "their exact per-sample Grad-CAM needs batched vector-Jacobian products"
        )
    report["settings"] = {"profile": profile, **{k: v for k, v in settings.items() if k in sections}}
    report["met"] = {section: report[section]["met"] for section in sections}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller data set (~2-3 min)")
    parser.add_argument("--output", type=Path, help="write the JSON report here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: tiny models and data
    parser.add_argument("--sections", nargs="+", choices=list(GOALS), help=argparse.SUPPRESS)
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

    profile = "tiny" if args.tiny else "quick" if args.quick else "full"
    report = run_benchmark(profile, device, args.sections)
    print_report(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
