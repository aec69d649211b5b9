"""The scoring sections of scripts/bench.py: ``gaze_consistency`` against the study's way on one data
set (``dataset_scoring``), and scoring many images: throughput against plain inference and the peak
memory of a fresh process against the data's size (``scoring_scale``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench_common import (
    VALUE_TOLERANCE,
    bench_folder,
    create_model,
    goals_met,
    normalize,
    proc_status_kb,
    ratio,
    run_in_fresh_processes,
    synchronize,
    timeit_interleaved,
)

from hf_gazecons.metric import gaze_consistency


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

    folder = bench_folder(data_dir, n_images, image_px)
    loaded = scoring_model(model, size, folder, device)
    stream = scoring_data(folder, n, streaming=True)
    try:
        before = proc_status_kb("VmRSS") * 1024
    except (OSError, KeyError):
        before = None
    result = gaze_consistency(loaded, stream, batch_size=batch, progress=False)
    try:
        peak, method = proc_status_kb("VmHWM") * 1024, "VmHWM (peak resident set of the process)"
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


def _memory_probes(options: dict[str, Any], counts: tuple[int, int], device: torch.device) -> list[dict[str, Any]]:
    """The peak resident memory of a fresh process that scores each of ``counts`` streamed images."""
    return run_in_fresh_processes([["--_scoring-probe", json.dumps({**options, "n": n})] for n in counts], device)


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
    options = {"model": model, "size": size, "batch": batch, "n_images": n_images, "image_px": image_px}
    small, large = (None, None)
    if probes:
        small, large = _memory_probes({**options, "data_dir": data_dir}, (rss_small, rss_large), device)
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
