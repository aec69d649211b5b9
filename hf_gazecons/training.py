"""One fine-tuning run, end to end: data and model in, trained model, scores and pictures out.

``hf-gazecons train`` and ``scripts/train.py`` (for ``accelerate launch``) parse
:class:`ModelDataArguments` and :class:`~hf_gazecons.trainer.GazeConsistencyTrainingArguments`
with ``HfArgumentParser`` and call :func:`train`. The output directory holds the model (loadable
by timm and transformers), ``gazecons_state.safetensors``, ``results.json``, the pictures and the
model card ``README.md``. The evaluation split drives ReduceLROnPlateau and gives ``final``; where
the data set has a separate ``test`` split, the final model is scored on it too (``final_test``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import set_seed

from .data import ImageClassificationDataset, default_eval_split, load_image_dataset, select_split, select_subset
from .errors import HubError
from .filenames import RESULTS_FILE
from .hub import model_card, push_output
from .metric import ConsistencyResult
from .models import LoadedModel, load_model, save_model
from .plots import pearson_r, plot_class_means, plot_kappa_vs_consistency, plot_learning_curves
from .trainer import GazeConsistencyTrainer, GazeConsistencyTrainingArguments

__all__ = ["ModelDataArguments", "TrainingRun", "train", "epoch_history", "RESULTS_FILE"]

_HISTORY_KEYS = ("loss", "penalty", "lambda", "learning_rate", "zero_map_share")
TEST_SPLIT = "test"


@dataclass
class ModelDataArguments:
    """What to train on what (the options beside ``TrainingArguments``)."""

    model: str = field(default="resnet18", metadata={"help": "timm architecture, hf-hub:org/name, Hub id or folder."})
    dataset: str = field(
        default="builtin:shapes", metadata={"help": "builtin:shapes|digits, Hub data set id or folder."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Split to evaluate on (default: validation/test)."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (detected if omitted)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (detected if omitted)."})
    image_size: int | None = field(default=None, metadata={"help": "Square input size (default: the model's)."})
    grayscale: bool = field(
        default=False, metadata={"help": "1-channel input normalised with mean/std 0.5 (the study's)."}
    )
    pretrained: bool = field(default=False, metadata={"help": "Start a timm architecture from its pretrained weights."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training samples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many evaluation samples."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow a Hub model's own code to run."})


@dataclass
class TrainingRun:
    """What a run wrote to ``results.json``, and its final evaluation (with the class-mean maps)."""

    results: dict[str, Any]
    evaluation: ConsistencyResult
    output_dir: Path


def train(data_args: ModelDataArguments, args: GazeConsistencyTrainingArguments) -> TrainingRun:
    """Fine-tune with the regulariser and write the output directory (on the main process)."""
    push_to, hub_token = (args.hub_model_id if args.push_to_hub else None), args.hub_token
    if args.push_to_hub and (not push_to or push_to.count("/") != 1):
        raise HubError("--push_to_hub needs --hub_model_id ORG/NAME")
    if args.push_to_hub or hub_token is not None:
        # The Trainer's own push would upload pickles and checkpoints, and the Trainer pickles its
        # arguments (hub_token included) into every checkpoint-N/training_args.bin: it gets neither.
        args = replace(args, push_to_hub=False, hub_token=None)
    set_seed(args.seed)
    train_data, eval_data, eval_split, test_data = _splits(data_args, args.seed)
    label_names = list(train_data.features["label"].names)
    loaded = load_model(
        data_args.model,
        label_names=label_names,
        pretrained=data_args.pretrained,
        image_size=data_args.image_size,
        grayscale=data_args.grayscale,
        trust_remote_code=data_args.trust_remote_code,
    )
    prep = loaded.preprocessing
    trainer = GazeConsistencyTrainer(
        model=loaded.model,
        args=args,
        train_dataset=ImageClassificationDataset.with_preprocessing(train_data, prep, train=True),
        eval_dataset=ImageClassificationDataset.with_preprocessing(eval_data, prep),
        label_names=label_names,
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if trainer.last_eval_step != trainer.state.global_step:
        trainer.evaluate()
    if test_data is not None:
        trainer.evaluate(ImageClassificationDataset.with_preprocessing(test_data, prep), metric_key_prefix="test")
    results = _results(trainer, loaded, data_args, eval_split, test_data is not None)
    run = TrainingRun(results, trainer.last_eval_result, Path(args.output_dir))
    if trainer.is_world_process_zero():
        _write_outputs(run, trainer.gaze_state(), loaded)
        if push_to:
            push_output(run.output_dir, push_to, private=bool(args.hub_private_repo), token=hub_token)
    return run


def _splits(
    data_args: ModelDataArguments, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset, str, datasets.Dataset | None]:
    """Training and evaluation splits, and the ``test`` split when it is neither of them."""
    data = load_image_dataset(
        data_args.dataset, image_column=data_args.image_column, label_column=data_args.label_column
    )
    train_data = select_split(data, data_args.train_split, data_args.dataset)
    eval_split = data_args.eval_split or default_eval_split([s for s in data if s != data_args.train_split])
    eval_data = select_split(data, eval_split, data_args.dataset)
    test_data = None
    if TEST_SPLIT in data and TEST_SPLIT not in (data_args.train_split, eval_split):
        test_data = select_subset(select_split(data, TEST_SPLIT, data_args.dataset), data_args.max_eval_samples, seed)
    return (
        select_subset(train_data, data_args.max_train_samples, seed),
        select_subset(eval_data, data_args.max_eval_samples, seed),
        eval_split,
        test_data,
    )


def _results(
    trainer: GazeConsistencyTrainer,
    loaded: LoadedModel,
    data_args: ModelDataArguments,
    eval_split: str,
    has_test: bool,
) -> dict[str, Any]:
    args = trainer.args
    history = epoch_history(trainer.state.log_history)
    config = {
        "model": data_args.model,
        "architecture": getattr(loaded.model, "default_cfg", {}).get("architecture", type(loaded.model).__name__),
        "library": loaded.library,
        "base_model": _base_model(data_args),
        "dataset": data_args.dataset,
        "eval_split": eval_split,
        "test_split": TEST_SPLIT if has_test else None,
        "label_names": list(loaded.label_names),
        "image_size": list(loaded.preprocessing.image_size),
        "channels": loaded.preprocessing.num_channels,
        "lambda_max": args.lambda_max,
        "t0": args.t0,
        "t1": args.t1,
        "lambda_per_step": args.lambda_per_step,
        "ema_alpha": args.ema_alpha,
        "variant": args.variant,
        "second_order": args.second_order,
        "target_layer": trainer.target_name,
        "epochs": args.num_train_epochs,
        "learning_rate": args.learning_rate,
        "batch_size": args.per_device_train_batch_size * args.world_size,
        "seed": args.seed,
    }
    return {
        "config": config,
        "final": trainer.last_eval_metrics,
        "final_test": trainer.evaluation_metrics.get("test") if has_test else None,
        "history": history,
        "pearson_r_kappa_consistency": pearson_r(
            [h.get("eval_kappa") for h in history], [h.get("eval_gaze_consistency") for h in history]
        ),
    }


def _base_model(data_args: ModelDataArguments) -> str | None:
    """The Hub id training started from, if any (``timm/<name>`` for pretrained timm weights)."""
    spec = data_args.model.removeprefix("hf-hub:")
    if Path(spec).exists():
        return None
    if "/" in spec:
        return spec.partition("@")[0]
    return f"timm/{spec}" if data_args.pretrained else None


def epoch_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per logged point from ``Trainer.state.log_history``: the training logs and
    evaluation metrics that share an ``epoch`` (fractional when logging or evaluating within an
    epoch: 0.5, 1, 1.5, ...)."""
    by_epoch: dict[float, dict[str, Any]] = {}
    for entry in log_history:
        if "epoch" not in entry or "train_runtime" in entry:
            continue
        epoch = epoch_value(entry["epoch"])
        row = by_epoch.setdefault(epoch, {"epoch": epoch})
        for key, value in entry.items():
            if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")):
                row[key] = value
            elif key in _HISTORY_KEYS:
                row["train_" + key if key in ("loss", "penalty", "zero_map_share") else key] = value
    return [by_epoch[e] for e in sorted(by_epoch)]


def epoch_value(epoch: float) -> int | float:
    """``Trainer.state.epoch`` as a history key: a whole number as an int, a fraction to 4 decimals."""
    epoch = round(float(epoch), 4)
    return int(epoch) if epoch.is_integer() else epoch


def _write_outputs(run: TrainingRun, gaze_state: dict[str, torch.Tensor], loaded: LoadedModel) -> None:
    output_dir, results = run.output_dir, run.results
    save_model(loaded, output_dir, gaze_state=gaze_state)
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    title = f"{results['config']['architecture']}  lambda_max={results['config']['lambda_max']}"
    plot_learning_curves(results["history"], output_dir / "learning_curves.png", title)
    plot_kappa_vs_consistency(results["history"], output_dir / "kappa_vs_consistency.png", title)
    plot_class_means({title: run.evaluation.class_means}, loaded.label_names, output_dir / "class_means.png")
    model_card(results).save(output_dir / "README.md")
