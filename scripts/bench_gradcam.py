"""The Grad-CAM sections of scripts/bench.py: one batch against a no-grad forward and the peer
libraries (``gradcam``), and the peak memory of one batch, each contender in a fresh process (``memory``)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from bench_common import (
    PEERS,
    create_model,
    goals_met,
    normalize,
    peer_available,
    proc_status_kb,
    ratio,
    reset_peak_rss,
    run_in_fresh_processes,
    synchronize,
    timeit_interleaved,
)

from hf_gazecons.cam import GradCAM


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
    for peer, build in (("pytorch_grad_cam", _pytorch_grad_cam), ("captum", _captum), ("torchcam", _torchcam)):
        if peer_available(peer):
            contenders[peer], peer_maps[peer] = build(net, x, predicted)

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


Contender = tuple[Callable[[], Any], Callable[[], torch.Tensor]]
"""A peer's timed call (its documented use) and its maps at the target's resolution, normalised like ours."""


def _pytorch_grad_cam(net: torch.nn.Module, x: torch.Tensor, predicted: torch.Tensor) -> Contender:
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in predicted]

    def timed() -> Any:
        with PGCGradCAM(model=net, target_layers=[net.layer4[-1]]) as cam:
            return cam(input_tensor=x, targets=targets)  # (B, H, W) maps resized to the input

    def maps() -> torch.Tensor:
        # its output is resized to the input and min-maxed with eps 1e-7; compare at the
        # target's resolution instead: its own Grad-CAM of the stored activations/gradients
        with PGCGradCAM(model=net, target_layers=[net.layer4[-1]]) as cam:
            cam(input_tensor=x, targets=targets)
            store = cam.activations_and_grads
            activations, gradients = (t[0].cpu().numpy() for t in (store.activations, store.gradients))
            raw = cam.get_cam_image(x, net.layer4[-1], targets, activations, gradients)
        return normalize(F.relu(torch.as_tensor(raw)))

    return timed, maps


def _captum(net: torch.nn.Module, x: torch.Tensor, predicted: torch.Tensor) -> Contender:
    from captum.attr import LayerGradCam

    layer_gradcam = LayerGradCam(net, net.layer4)

    def timed() -> torch.Tensor:
        attribution = layer_gradcam.attribute(x, target=predicted, relu_attributions=True)
        return normalize(attribution[:, 0].detach())

    return timed, timed


def _torchcam(net: torch.nn.Module, x: torch.Tensor, predicted: torch.Tensor) -> Contender:
    from torchcam.methods import GradCAM as TorchCAMGradCAM

    classes = predicted.tolist()

    def timed() -> torch.Tensor:
        with TorchCAMGradCAM(net, "layer4", input_shape=tuple(x.shape[1:])) as extractor:
            scores = net(x)
            (cam,) = extractor(class_idx=classes, scores=scores, normalized=False)
        return normalize(cam)

    return timed, timed


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
    elif reset_peak_rss():
        baseline = proc_status_kb("VmRSS") * 1024
        out = run()
        growth = proc_status_kb("VmHWM") * 1024 - baseline
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
