"""The training sections of scripts/bench.py: one optimizer step, plain against consistency-regularised
at several batch sizes, targets and per-sample modes (``train_step``), and training epochs on the chest-X-ray-like image folder: GazeConsistencyTrainer
against the plain transformers Trainer and a hand-written timm loop (``train_epoch``)."""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from bench_common import bench_folder, create_model, goals_met, ratio, synchronize, timeit_interleaved

from hf_gazecons.cam import GradCAM
from hf_gazecons.per_sample import couples_samples
from hf_gazecons.regularizer import GazeConsistencyLoss


GOAL_MIN_BATCH = 32
"""The step goals hold from this batch on (the study's batch and larger): at smaller batches the
fixed costs of a step weigh more, and their ratios are reported without a goal."""


def bench_train_step(
    model: str,
    size: int,
    batches: list[int],
    num_classes: int,
    reps: int,
    lam: float,
    exact_batches: list[int],
    exact_reps: int,
    device: torch.device,
    warmup: int = 3,
) -> dict[str, Any]:
    """A plain cross-entropy Adam step vs the regularised step (CE + lam * L_CAM^train), per batch size.

    At every batch in ``batches``, interleaved (``reps`` repetitions after ``warmup`` untimed steps):
    the plain step, the regularised step at the default target, and at timm stage -2 with
    ``per_sample="held_stats"`` (the default), first and second order. At the batches in ``exact_batches``, the stage -2 step
    with ``per_sample="exact"`` is timed against the plain step in a second interleaved round
    (``exact_reps`` repetitions after one warm-up: its cost grows with the square of the batch).
    ``maps_mean_abs_diff`` / ``maps_max_abs_diff`` (where exact runs): how far the normalised stage -2
    maps of the two modes lie apart on the initial model and batch. ``probe_s``: one run of the
    coupling probe at stage -2 (on a forward's graph), which a step pays on its first call only. Labels are the train-mode predictions of the initial model on the batch,
    so at the start every sample is correctly classified and the penalty is active (the count that
    took part in the last step is reported). Each contender trains its own copy of the same initial
    model with its own Adam optimiser.
    """
    rows, penalty, paths = [], {}, {}
    for batch in batches:
        row, penalty[batch], paths[batch] = _train_step_row(
            model, size, batch, num_classes, reps, lam, batch in exact_batches, exact_reps, device, warmup
        )
        rows.append(row)
    goal_rows = [row for row in rows if row["batch"] >= GOAL_MIN_BATCH]
    result: dict[str, Any] = {
        "rows": rows,
        "overhead": max((row["default_ratio"] for row in goal_rows), default=None),
        "overhead_stage": max((row["stage_held_stats_ratio"] for row in goal_rows), default=None),
    }
    result["met"] = goals_met("train_step", result)
    result["_extra"] = {"penalty": penalty, "per_sample_paths": paths, "goal_min_batch": GOAL_MIN_BATCH}
    return result


def _train_step_row(
    model: str,
    size: int,
    batch: int,
    num_classes: int,
    reps: int,
    lam: float,
    with_exact: bool,
    exact_reps: int,
    device: torch.device,
    warmup: int,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str | None]]:
    """One batch size of :func:`bench_train_step`: its row, the penalty's participation, the paths taken."""
    torch.manual_seed(0)
    base = create_model(model, device, num_classes).train()
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        labels = base(x).argmax(dim=1)

    plain_net = copy.deepcopy(base)
    plain_opt = torch.optim.Adam(plain_net.parameters(), lr=1e-4)
    last: dict[str, Any] = {}
    cams: dict[str, GradCAM] = {}

    def plain() -> None:
        loss = F.cross_entropy(plain_net(x), labels)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    def regularised_step(
        name: str, target: int | None, per_sample: str, second_order: bool = False
    ) -> Callable[[], None]:
        net = copy.deepcopy(base)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        cam = cams[name] = GradCAM(net, target, True, second_order, per_sample)
        penalty = GazeConsistencyLoss(num_classes).to(device)

        def step() -> None:
            out = cam(x, targets=labels)
            term = penalty(out.maps, out.logits, labels)
            loss = F.cross_entropy(out.logits, labels) + lam * term.loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            last[name] = {"samples": term.n_samples, "classes": term.n_classes}

        return step

    sync = lambda: synchronize(device)  # noqa: E731
    medians = timeit_interleaved(
        {
            "plain": plain,
            "default": regularised_step("default target", None, "held_stats"),
            "held_stats": regularised_step("stage -2, held_stats", -2, "held_stats"),
            "second_order": regularised_step("stage -2, held_stats, second order", -2, "held_stats", True),
        },
        reps,
        warmup=warmup,
        sync=sync,
    )
    exact: dict[str, float | None] = {"plain": None, "exact": None}
    difference = torch.full((1,), float("nan"))
    if with_exact:
        exact_step = regularised_step("stage -2, exact", -2, "exact")
        exact = timeit_interleaved({"plain": plain, "exact": exact_step}, exact_reps, warmup=1, sync=sync)
        net = copy.deepcopy(base)  # the initial model, train mode: the maps of the two definitions
        held_maps = GradCAM(net, -2, per_sample="held_stats")(x, labels).maps
        difference = (held_maps - GradCAM(net, -2, per_sample="exact")(x, labels).maps).abs()
    row = {
        "batch": batch,
        "plain_s": medians["plain"],
        "default_s": medians["default"],
        "default_ratio": ratio(medians["default"], medians["plain"]),
        "stage_held_stats_s": medians["held_stats"],
        "stage_held_stats_ratio": ratio(medians["held_stats"], medians["plain"]),
        "stage_second_order_s": medians["second_order"],
        "stage_second_order_ratio": ratio(medians["second_order"], medians["plain"]),
        "stage_exact_s": exact["exact"],
        "stage_exact_plain_s": exact["plain"],
        "stage_exact_ratio": ratio(exact["exact"], exact["plain"]),
        "maps_mean_abs_diff": None if not with_exact else float(difference.mean()),
        "maps_max_abs_diff": None if not with_exact else float(difference.max()),
        "probe_s": _probe_seconds(copy.deepcopy(base), x, device),
    }
    return row, last, {name: cam.per_sample_path for name, cam in cams.items()}


def _probe_seconds(net: torch.nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Wall time of the coupling probe at stage -2, on the graph of one train-mode forward."""
    module = net.get_submodule(GradCAM(net, -2).target_name)
    captured: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _module, _args, output: captured.setdefault("A", output))
    try:
        logits = net(x)
    finally:
        handle.remove()
    synchronize(device)
    start = time.perf_counter()
    couples_samples(logits, captured["A"])
    synchronize(device)
    return time.perf_counter() - start


class WithLoss(torch.nn.Module):
    """A timm classifier as the plain transformers ``Trainer`` wants it: the loss when given labels."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.net(pixel_values)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


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
    inputs = _epoch_inputs(model, size, n_images, image_px, n_train, device, data_dir)
    scratch = tempfile.TemporaryDirectory(prefix="hf_gazecons_bench_")
    penalty: dict[str, Any] = {}
    setting = _EpochSetting(scratch.name, device, precision, epochs, batch, workers)
    builders = _epoch_contenders(inputs, setting, lam, penalty)
    with scratch:
        if warmup_steps:
            for build in builders.values():
                build(max_steps=warmup_steps)()
        medians = timeit_interleaved(builders, reps, warmup=0, sync=lambda: synchronize(device), prepare=True)
    rate = {name: epochs * len(inputs.rows) / seconds for name, seconds in medians.items()}
    n_loader = min(loader_images, len(inputs.rows))
    result: dict[str, Any] = {
        "gazecons_images_per_s": rate["gazecons"],
        "trainer_images_per_s": rate["trainer"],
        "timm_loop_images_per_s": rate["timm_loop"],
        "ratio_vs_timm_loop": ratio(rate["gazecons"], rate["timm_loop"]),
        "ratio_vs_trainer": ratio(rate["gazecons"], rate["trainer"]),
        "loader_images_per_s": loader_rate(inputs.train_items, n_loader, batch),
        "timm_loader_images_per_s": loader_rate(inputs.timm_items, n_loader, batch),
    }
    result["met"] = goals_met("train_epoch", result)
    result["_extra"] = {"data": str(inputs.folder), "n_train": len(inputs.rows), "penalty": penalty}
    return result


@dataclass
class _EpochInputs:
    """What every contender of the epoch benchmark starts from: the same images and initial weights."""

    folder: Path
    rows: Any  # the datasets.Dataset of the chosen training images
    names: list[str]
    base: torch.nn.Module
    train_items: Any  # the Trainers' torch Dataset
    timm_items: Any  # the timm loop's torch Dataset of the same files


@dataclass
class _EpochSetting:
    """How every contender trains: where it writes, on what device, at what precision, for how long."""

    scratch: str
    device: torch.device
    precision: str
    epochs: int
    batch: int
    workers: int


def _epoch_inputs(
    model: str, size: int, n_images: int, image_px: int, n_train: int, device: torch.device, data_dir: str | None
) -> _EpochInputs:
    """``n_train`` images of the benchmark folder, read the Trainers' way and timm's way, and the model."""
    import datasets as hf_datasets

    from hf_gazecons.data import ImageClassificationDataset, load_image_dataset, select_subset
    from hf_gazecons.models import load_model

    folder = bench_folder(data_dir, n_images, image_px)
    rows = select_subset(load_image_dataset(str(folder), "train"), n_train, seed=0)
    names = list(rows.features["label"].names)
    torch.manual_seed(0)
    loaded = load_model(model, label_names=names, image_size=size, grayscale=True)
    prep = loaded.preprocessing
    train_items = ImageClassificationDataset.with_preprocessing(rows, prep, train=True)
    chosen = {value["path"] for value in rows.cast_column("image", hf_datasets.Image(decode=False))["image"]}
    timm_all = timm.data.ImageDataset(str(folder / "train"), input_img_mode=prep.mode, transform=prep.train_transform)
    timm_items = torch.utils.data.Subset(
        timm_all, [i for i, (path, _) in enumerate(timm_all.reader.samples) if path in chosen]
    )
    if len(timm_items) != len(rows):
        raise RuntimeError(f"the timm loop would read {len(timm_items)} images, the Trainers {len(rows)}")
    return _EpochInputs(folder, rows, names, loaded.model.to(device), train_items, timm_items)


def _epoch_contenders(
    inputs: _EpochInputs, setting: _EpochSetting, lam: float, penalty: dict[str, Any]
) -> dict[str, Callable[..., Callable[[], Any]]]:
    """Builders of each contender's timed run (``max_steps`` for the warm-up): our Trainer (its
    epoch's penalty log goes into ``penalty``), the plain Trainer and the timm loop."""
    from transformers import Trainer, TrainingArguments

    from hf_gazecons.trainer import GazeConsistencyTrainer, GazeConsistencyTrainingArguments

    s = setting
    common = {"num_train_epochs": s.epochs, "per_device_train_batch_size": s.batch, "dataloader_num_workers": s.workers}

    def gazecons(max_steps: int = -1) -> Callable[[], Any]:
        args = trainer_arguments(
            GazeConsistencyTrainingArguments, s.scratch, s.device, s.precision, lambda_max=lam, t0=0, t1=1,
            max_steps=max_steps, **common,
        )  # fmt: skip
        trainer = quiet(
            GazeConsistencyTrainer(
                model=copy.deepcopy(inputs.base), args=args, train_dataset=inputs.train_items, label_names=inputs.names
            )
        )

        def run() -> None:
            trainer.train()
            for entry in trainer.state.log_history:  # the epoch's log: did the penalty take part?
                penalty.update({k: entry[k] for k in ("lambda", "penalty_samples", "penalty_classes") if k in entry})

        return run

    def plain_trainer(max_steps: int = -1) -> Callable[[], Any]:
        args = trainer_arguments(TrainingArguments, s.scratch, s.device, s.precision, max_steps=max_steps, **common)
        model = WithLoss(copy.deepcopy(inputs.base))
        return quiet(Trainer(model=model, args=args, train_dataset=inputs.train_items)).train

    def timm_loop(max_steps: int | None = None) -> Callable[[], Any]:
        return timm_training_loop(
            copy.deepcopy(inputs.base), inputs.timm_items, s.batch, s.workers, s.device, s.precision,
            epochs=s.epochs, max_steps=max_steps,
        )  # fmt: skip

    return {"gazecons": gazecons, "trainer": plain_trainer, "timm_loop": timm_loop}
