"""The faithfulness section of scripts/bench.py: our batched deletion/insertion and ROAD against
torchcam's ``DeletionInsertionMetric`` and pytorch-grad-cam's ROAD on the same model, images, maps
and classes, timed in one run, with a check that they compute the same numbers."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from bench_common import create_model, goals_met, peer_available, ratio, timeit_interleaved

from hf_gazecons.faithfulness import deletion_insertion, road, upsample_maps


class _FixedMaps:
    """A torchcam CAM extractor that hands torchcam's metric the maps every contender ranks."""

    def __init__(self, model: torch.nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx: Any = None, scores: Any = None, normalized: bool = True, **kwargs: Any) -> list:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self) -> Any:
        yield


def bench_faithfulness(
    model: str,
    size: int,
    batch: int,
    grid: int,
    steps: int,
    percentiles: list[int],
    reps: int,
    road_reps: int,
    device: torch.device,
) -> dict[str, Any]:
    """Deletion/insertion (ours vs torchcam) and ROAD at ``percentiles``, MoRF and LeRF (ours vs
    pytorch-grad-cam, noise 0), on ``batch`` random images of ``size`` px with random ``grid`` x
    ``grid`` maps of the predicted classes. torchcam scores the batch in its own chunks of 32;
    pytorch-grad-cam imputes image by image (a sparse direct solve each) and runs the batch through
    the model before and after every percentile, as its metric classes do."""
    torch.manual_seed(0)
    net = create_model(model, device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    maps = torch.rand(batch, grid, grid, device=device)
    with torch.no_grad():
        classes = net(x).argmax(dim=1)

    values: dict[str, Any] = {}
    timed_deletion: dict[str, Callable[[], Any]] = {
        "ours": lambda: deletion_insertion(net, x, maps, classes, steps=steps),
    }
    if peer_available("torchcam"):
        from torchcam.metrics import DeletionInsertionMetric

        def torchcam() -> tuple[float, float]:
            metric = DeletionInsertionMetric(_FixedMaps(net, maps), partial(torch.softmax, dim=-1), steps=steps)
            metric.update(x, class_idx=classes.tolist())
            summary = metric.summary()
            return summary["deletion_auc"], summary["insertion_auc"]

        timed_deletion["torchcam"] = torchcam
    times = timeit_interleaved(timed_deletion, reps=reps)
    deletion, insertion = deletion_insertion(net, x, maps, classes, steps=steps)
    values["deletion_ours_s"] = times["ours"]
    values["deletion_torchcam_s"] = times.get("torchcam")
    values["speedup_vs_torchcam"] = ratio(times.get("torchcam"), times["ours"])
    if "torchcam" in times:
        theirs = timed_deletion["torchcam"]()
        ours = (float(deletion.mean()), float(insertion.mean()))
        values["max_abs_diff_vs_torchcam"] = max(abs(a - b) for a, b in zip(ours, theirs))
    else:
        values["max_abs_diff_vs_torchcam"] = None

    timed_road: dict[str, Callable[[], Any]] = {"ours": lambda: road(net, x, maps, classes, percentiles=percentiles)}
    if peer_available("pytorch_grad_cam"):
        from pytorch_grad_cam.metrics.perturbation_confidence import (
            PerturbationConfidenceMetric,
            RemoveLeastRelevantFirst,
            RemoveMostRelevantFirst,
        )
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        cams = upsample_maps(maps, (size, size)).cpu().numpy()
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]

        def pytorch_grad_cam() -> tuple[np.ndarray, np.ndarray]:
            curves = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy's __array_wrap__ deprecation inside scipy.sparse
                for removal in (RemoveMostRelevantFirst, RemoveLeastRelevantFirst):
                    imputers = [removal(p, NoisyLinearImputer(noise=0.0)) for p in percentiles]
                    metrics = [PerturbationConfidenceMetric(imputer) for imputer in imputers]
                    curves.append(np.stack([metric(x, cams, targets, net) for metric in metrics], axis=1))
            return curves[0], curves[1]

        timed_road["pytorch_grad_cam"] = pytorch_grad_cam
    times = timeit_interleaved(timed_road, reps=road_reps, warmup=0)
    values["road_ours_s"] = times["ours"]
    values["road_pytorch_grad_cam_s"] = times.get("pytorch_grad_cam")
    values["speedup_vs_pytorch_grad_cam"] = ratio(times.get("pytorch_grad_cam"), times["ours"])
    if "pytorch_grad_cam" in times:
        morf, lerf = road(net, x, maps, classes, percentiles=percentiles)
        theirs = timed_road["pytorch_grad_cam"]()
        values["max_abs_diff_vs_pytorch_grad_cam"] = float(
            max(np.abs(morf.cpu().numpy() - theirs[0]).max(), np.abs(lerf.cpu().numpy() - theirs[1]).max())
        )
    else:
        values["max_abs_diff_vs_pytorch_grad_cam"] = None
    values["met"] = goals_met("faithfulness", values)
    return values
