"""The ``cam_methods`` section of scripts/bench.py: every CAM method of hf_gazecons on one batch against
today's Grad-CAM and against the peers' implementations of the same method; Score-CAM against
torchcam's at its default batch size (time, and peak memory in fresh processes); and every method
in one pass against the slowest single method.

All in one run, interleaved: the gradient methods and Eigen-CAM on ``batch`` images; Score-CAM (one
forward per channel and image) on ``scorecam_images`` of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from bench_common import (
    create_model,
    goals_met,
    normalize,
    peer_available,
    ratio,
    run_in_fresh_processes,
    synchronize,
    timeit_interleaved,
)
from bench_gradcam import peak_growth

from hf_gazecons.cam import CAM, GradCAM
from hf_gazecons.cam_family import cam_methods
from hf_gazecons.method_comparison import compare_cam_methods
from hf_gazecons.metric import gaze_consistency

PGC_CLASSES = dict(
    zip(
        (*cam_methods(differentiable=True), "eigencam"),
        ("GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM", "GradCAMElementWise", "EigenCAM"),
    )
)
"""pytorch-grad-cam's class of each method it implements (Score-CAM is compared with torchcam's)."""
TORCHCAM_CLASSES = {"gradcampp": "GradCAMpp", "xgradcam": "XGradCAM", "layercam": "LayerCAM"}
TORCHCAM_SCORECAM_BATCH = 32  # torchcam's ScoreCAM default batch_size, and ours for the comparison
GRADCAMPP_SCALE = 1e4  # pytorch-grad-cam's 1e-6 in Grad-CAM++ made negligible for the agreement check


def bench_cam_methods(
    model: str, size: int, batch: int, reps: int, scorecam_images: int, scorecam_reps: int, device: torch.device
) -> dict[str, Any]:
    """Time every method (ours, pytorch-grad-cam's, torchcam's), check they compute the same maps,
    and time the one-pass comparison; see the module docstring."""
    torch.manual_seed(0)
    net = create_model(model, device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        predicted = net(x).argmax(dim=1)
    gradient = list(cam_methods(differentiable=True))
    one_forward = [*gradient, "eigencam"]
    layer = net.layer4[-1]

    contenders: dict[str, Callable[[], Any]] = {"gradcam_today": lambda: GradCAM(net)(x).maps}
    for method in one_forward:
        contenders[f"ours_{method}"] = lambda m=method: CAM(net, method=m)(x).maps
    if peer_available("pytorch_grad_cam"):
        for method in one_forward:
            contenders[f"pytorch_grad_cam_{method}"] = lambda m=method: _pgc_call(net, layer, x, predicted, m)
    if peer_available("torchcam"):
        for method in TORCHCAM_CLASSES:
            contenders[f"torchcam_{method}"] = lambda m=method: _torchcam_call(net, x, predicted, m)
    batches = [(x.cpu(), predicted.cpu())]
    for method in one_forward:
        contenders[f"score_{method}"] = lambda m=method: gaze_consistency(net, batches, cam_method=m, progress=False)
    contenders["score_all_one_forward"] = lambda: compare_cam_methods(net, batches, one_forward, progress=False)
    medians = timeit_interleaved(contenders, reps, sync=lambda: synchronize(device))

    result: dict[str, Any] = {"gradcam_today_s": medians["gradcam_today"]}
    for method in one_forward:
        ours = medians[f"ours_{method}"]
        result[f"{method}_s"] = ours
        result[f"{method}_ratio_vs_gradcam"] = ratio(ours, medians["gradcam_today"])
        result[f"{method}_speedup_vs_pytorch_grad_cam"] = ratio(medians.get(f"pytorch_grad_cam_{method}"), ours)
        if method in TORCHCAM_CLASSES:
            result[f"{method}_speedup_vs_torchcam"] = ratio(medians.get(f"torchcam_{method}"), ours)
    result.update(_agreement(net, layer, x, predicted, one_forward))
    gradient_ratios = [result[f"{m}_ratio_vs_gradcam"] for m in gradient]
    gradient_speedups = [result[f"{m}_speedup_vs_pytorch_grad_cam"] for m in gradient]
    result["max_ratio_vs_gradcam"] = max(gradient_ratios)
    result["min_speedup_vs_pytorch_grad_cam"] = None if None in gradient_speedups else min(gradient_speedups)
    slowest = max(one_forward, key=lambda m: medians[f"score_{m}"])
    result["score_all_one_forward_s"] = medians["score_all_one_forward"]
    result["score_slowest_one_forward_method"] = slowest
    result["all_one_forward_ratio_vs_slowest"] = ratio(medians["score_all_one_forward"], medians[f"score_{slowest}"])
    result.update(_scorecam(net, model, x[:scorecam_images], predicted[:scorecam_images], scorecam_reps, device))
    result["met"] = goals_met("cam_methods", result)
    result["_extra"] = {"scorecam_memory_method": result.pop("_memory_method")}
    return result


def _pgc_call(net: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, predicted: torch.Tensor, method: str):
    """pytorch-grad-cam's documented use: built per call in a with-block; maps resized to the input."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with getattr(pytorch_grad_cam, PGC_CLASSES[method])(model=net, target_layers=[layer]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in predicted])


def _torchcam_call(net: torch.nn.Module, x: torch.Tensor, predicted: torch.Tensor, method: str) -> torch.Tensor:
    import torchcam.methods

    extractor = getattr(torchcam.methods, TORCHCAM_CLASSES[method])
    with extractor(net, "layer4", input_shape=tuple(x.shape[1:])) as cam:
        scores = net(x)
        (maps,) = cam(class_idx=predicted.tolist(), scores=scores)
    return maps


def _agreement(
    net: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, predicted: torch.Tensor, methods: list[str]
) -> dict[str, float | None]:
    """max |ours - peer| of each method's maps at the target's resolution: pytorch-grad-cam's own
    get_cam_image on what it captured (Grad-CAM++: on (A / c, c G), see tests/test_cam_methods.py;
    Eigen-CAM: up to the projection's sign), and torchcam's extractors (eps 1e-8, as ours)."""
    diffs: dict[str, float | None] = {}
    ours = CAM(net).maps(x, predicted, methods)
    for method in methods:
        diffs[f"{method}_max_abs_diff_vs_pytorch_grad_cam"] = None
        if peer_available("pytorch_grad_cam"):
            peer = torch.as_tensor(_pgc_map(net, layer, x, predicted, method, ours[method].raw))
            diffs[f"{method}_max_abs_diff_vs_pytorch_grad_cam"] = float((peer - ours[method].maps.cpu()).abs().max())
        if method in TORCHCAM_CLASSES:
            peer = _torchcam_call(net, x, predicted, method).cpu() if peer_available("torchcam") else None
            diffs[f"{method}_max_abs_diff_vs_torchcam"] = (
                None if peer is None else float((peer - ours[method].maps.cpu()).abs().max())
            )
    return diffs


def _pgc_map(net, layer, x, predicted, method: str, our_raw: torch.Tensor) -> np.ndarray:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in predicted]
    with getattr(pytorch_grad_cam, PGC_CLASSES[method])(model=net, target_layers=[layer]) as cam:
        cam(input_tensor=x, targets=targets)
        store = cam.activations_and_grads
        activations = store.activations[0].numpy()
        gradients = store.gradients[0].numpy() if store.gradients else None
        if method == "gradcampp":
            activations, gradients = activations / GRADCAMPP_SCALE, gradients * GRADCAMPP_SCALE
        raw = torch.as_tensor(cam.get_cam_image(x, layer, targets, activations, gradients, eigen_smooth=False))
    if method == "eigencam":  # the sign of a singular vector is arbitrary; ours is fixed by convention
        raw = raw * torch.sign((raw * our_raw.cpu()).flatten(1).sum(dim=1))[:, None, None]
    return normalize(F.relu(raw), eps=1e-7).numpy()


def _scorecam(
    net: torch.nn.Module, model: str, x: torch.Tensor, predicted: torch.Tensor, reps: int, device: torch.device
) -> dict[str, Any]:
    """Ours vs torchcam's ScoreCAM (both 32 masked inputs per forward) and every method in one pass vs
    Score-CAM alone on ``x``; the peak memory of each Score-CAM in a fresh process."""
    batches = [(x.cpu(), predicted.cpu())]
    contenders: dict[str, Callable[[], Any]] = {
        "ours": lambda: CAM(net, method="scorecam", masked_batch_size=TORCHCAM_SCORECAM_BATCH)(x, predicted).maps,
        "score_scorecam": lambda: gaze_consistency(
            net, batches, cam_method="scorecam", batch_size=TORCHCAM_SCORECAM_BATCH, progress=False
        ),
        "score_all": lambda: compare_cam_methods(net, batches, batch_size=TORCHCAM_SCORECAM_BATCH, progress=False),
    }
    if peer_available("torchcam"):
        contenders["torchcam"] = lambda: _torchcam_scorecam(net, x, predicted)
    medians = timeit_interleaved(contenders, reps, warmup=0, sync=lambda: synchronize(device))
    ours = CAM(net, method="scorecam")(x, predicted).maps.cpu()
    peer = _torchcam_scorecam(net, x, predicted).cpu() if peer_available("torchcam") else None
    probes = ["ours", *(["torchcam"] if peer is not None else [])]
    memory = run_in_fresh_processes(
        [["--_scorecam-probe", kind, "--_probe-model", model, "--_probe-size", str(x.shape[-1]),
          "--_probe-batch", str(len(x))] for kind in probes],
        device,
    )  # fmt: skip
    by_kind = dict(zip(probes, memory))
    return {
        "scorecam_s": medians["ours"],
        "torchcam_scorecam_s": medians.get("torchcam"),
        "scorecam_speedup_vs_torchcam": ratio(medians.get("torchcam"), medians["ours"]),
        "scorecam_max_abs_diff_vs_torchcam": None if peer is None else float((peer - ours).abs().max()),
        "scorecam_mb": by_kind["ours"]["mb"],
        "torchcam_scorecam_mb": by_kind["torchcam"]["mb"] if "torchcam" in by_kind else None,
        "scorecam_memory_ratio_vs_torchcam": ratio(
            by_kind["ours"]["mb"], by_kind["torchcam"]["mb"] if "torchcam" in by_kind else None
        ),
        "score_all_s": medians["score_all"],
        "score_scorecam_s": medians["score_scorecam"],
        "all_ratio_vs_slowest": ratio(medians["score_all"], medians["score_scorecam"]),
        "_memory_method": by_kind["ours"]["method"],
    }


def _torchcam_scorecam(net: torch.nn.Module, x: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    from torchcam.methods import ScoreCAM

    with ScoreCAM(net, "layer4", batch_size=TORCHCAM_SCORECAM_BATCH, input_shape=tuple(x.shape[1:])) as cam:
        with torch.no_grad():
            net(x)
        (maps,) = cam(class_idx=predicted.tolist())
    return maps


def scorecam_memory_probe(kind: str, model: str, size: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Peak memory growth of one Score-CAM of ``batch`` images (``kind``: ours or torchcam, both 32
    masked inputs per forward), after a warm-up forward of one image. Meant for a fresh process."""
    torch.manual_seed(0)
    net = create_model(model, device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        predicted = net(x).argmax(dim=1)
        net(x[:1])
    if kind == "ours":
        cam = CAM(net, method="scorecam", masked_batch_size=TORCHCAM_SCORECAM_BATCH)
        growth, method = peak_growth(lambda: cam(x, predicted).maps, device)
    elif kind == "torchcam":
        growth, method = peak_growth(lambda: _torchcam_scorecam(net, x, predicted), device)
    else:
        raise ValueError(f"unknown Score-CAM probe {kind!r}")
    return {"kind": kind, "mb": growth / 2**20, "method": method}
