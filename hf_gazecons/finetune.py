"""One fine-tuning run, end to end: data and model in, trained model, scores and pictures out.

``hf-gazecons train`` and ``scripts/train.py`` (for ``accelerate launch``) parse
:class:`ModelDataArguments` and :class:`~hf_gazecons.trainer.GazeConsistencyTrainingArguments`
with ``HfArgumentParser`` and call :func:`train`. The output directory holds the model (loadable
by timm and transformers), ``gazecons_state.safetensors``, ``results.json``, the pictures and the
model card ``README.md``. The evaluation split drives ReduceLROnPlateau and gives ``final``; where
the data set has a separate ``test`` split, the final model is scored on it too (``final_test``).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import pyarrow as pa
import timm
import torch
import transformers
from transformers import set_seed

from . import __version__
from .checks import check_fields, require
from .class_maps import save_class_maps
from .consistency_result import ConsistencyResult
from .data import (
    ImageClassificationDataset,
    default_eval_split,
    drop_bad_images,
    load_image_dataset,
    select_split,
    select_subset,
)
from .data.bad_images import DEFAULT_MAX_BAD_SHARE, BadImage
from .data.row_index import with_row_index, with_row_metadata
from .errors import DataError, HubError
from .extremes import write_extremes
from .filenames import CLASS_MAPS_FILE, RESULTS_FILE, SAMPLES_FORMATS
from .hub import check_push_access, model_card, push_output
from .models import LoadedModel, load_model, save_model
from .output_dir import last_checkpoint, publish_files, removed_on_failure
from .preprocessing import Preprocessing
from .plots import plot_class_means, plot_kappa_vs_consistency, plot_learning_curves
from .run_record import CONSISTENCY, RunConfig, RunResults, epoch_history, metric_key
from .specs import parse_model_spec
from .stats import pearson_r
from .trainer import GazeConsistencyTrainer, GazeConsistencyTrainingArguments
from .training_checks import check_checkpoint_fits, prepare_run

if TYPE_CHECKING:
    from .faithfulness_report import FaithfulnessResult

__all__ = ["ModelDataArguments", "TrainingRun", "train"]

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
    skip_bad_images: bool = field(
        default=False,
        metadata={"help": "Leave out the images that cannot be decoded (each split is decoded once before training) "
                  "and record them in results.json (default: the first one stops the run)."},
    )  # fmt: skip
    max_bad_image_share: float | None = field(
        default=None,
        metadata={"help": f"With --skip_bad_images: above this share of broken images in a split the run fails "
                  f"(default: {DEFAULT_MAX_BAD_SHARE})."},
    )  # fmt: skip
    faithfulness: bool = field(
        default=False,
        metadata={"help": "Also score the final model's Grad-CAM by deletion and insertion on the evaluation split, "
                  "beside a random and the perfect (mask) map (about 120 forwards per image)."},
    )  # fmt: skip
    samples_format: str = field(
        default="parquet",
        metadata={
            "help": "The final evaluation's per-image table: samples.parquet, samples.csv or none.",
            "choices": list(SAMPLES_FORMATS),
        },
    )
    report: bool = field(default=True, metadata={"help": "Write report.html (--no_report: do not)."})

    def __post_init__(self) -> None:
        check_fields(self, dash="_")
        require(
            self.skip_bad_images or self.max_bad_image_share is None, "--max_bad_image_share needs --skip_bad_images"
        )
        require(
            self.samples_format in SAMPLES_FORMATS,
            f"--samples_format must be one of {', '.join(SAMPLES_FORMATS)}, not {self.samples_format!r}",
        )


@dataclass
class TrainingRun:
    """What a run wrote to ``results.json``, and its final evaluation (with the class-mean maps)."""

    results: RunResults
    evaluation: ConsistencyResult
    output_dir: Path
    samples: pa.Table | None = None
    """The final evaluation's per-image table (None with ``samples_format="none"``)."""


def train(data_args: ModelDataArguments, args: GazeConsistencyTrainingArguments) -> TrainingRun:
    """Fine-tune with the regulariser and write the output directory (on the main process).

    Checked before anything is loaded: the output folder, the checkpoint to resume from, the
    processes and, with ``push_to_hub``, the token and the repo. A run that fails (a non-finite
    loss, bad data, Ctrl-C) writes no model, results or card, publishes nothing, and removes the
    output folder again if it created it and no checkpoint was written into it.

    Args:
        data_args: the model (timm name, Hub id or folder), the data set and its splits and
            columns, the input size and the sample limits.
        args: ``TrainingArguments`` plus the regulariser's options (``lambda_max``, ``t0``,
            ``t1``, ``ema_alpha``, ``variant``, ``target_layer``, ...).

    Returns:
        A :class:`TrainingRun`: the run record (:class:`~hf_gazecons.run_record.RunResults`), the
        final evaluation with its class-mean maps, and the output folder.

    Raises:
        UsageError: an option, the output folder or the checkpoint cannot be used.
        DataError, ModelLoadError: the data or the model cannot be loaded.
        TrainingError: the loss stopped being finite.
        HubError: ``push_to_hub`` cannot push.

    Example::

        >>> run = train(ModelDataArguments(model="resnet18", dataset="builtin:shapes"),
        ...             GazeConsistencyTrainingArguments("out", lambda_max=50.0, num_train_epochs=10))
        >>> run.results.metric("gaze_consistency"), run.results.metric("accuracy", "test")
    """
    checkpoint = prepare_run(args)
    push_to, hub_token = (args.hub_model_id if args.push_to_hub else None), args.hub_token
    if args.push_to_hub and (not push_to or push_to.count("/") != 1):
        raise HubError("--push_to_hub needs --hub_model_id ORG/NAME")
    if push_to:
        check_push_access(push_to, hub_token)
    if args.push_to_hub or hub_token is not None:
        # The Trainer's own push would upload pickles and checkpoints, and the Trainer pickles its
        # arguments (hub_token included) into every checkpoint-N/training_args.bin: it gets neither.
        args = replace(args, push_to_hub=False, hub_token=None)
    with removed_on_failure(
        args.output_dir, keep=lambda folder: last_checkpoint(folder) is not None, enabled=args.should_save
    ):
        run = _fit(data_args, args, checkpoint)
    if push_to and args.should_save:
        push_output(run.output_dir, push_to, private=bool(args.hub_private_repo), token=hub_token)
    return run


def _fit(data_args: ModelDataArguments, args: GazeConsistencyTrainingArguments, checkpoint: str | None) -> TrainingRun:
    set_seed(args.seed)
    train_data, eval_data, eval_split, test_data = _splits(data_args, args.seed)
    label_names = list(train_data.features["label"].names)
    if len(label_names) < 2:
        raise DataError(f"the data set has one class ({label_names}): a classifier needs at least 2")
    spec = parse_model_spec(data_args.model)  # once: the load and the model card both need it
    loaded = load_model(
        spec,
        label_names=label_names,
        pretrained=data_args.pretrained,
        image_size=data_args.image_size,
        grayscale=data_args.grayscale,
        trust_remote_code=data_args.trust_remote_code,
    )
    if checkpoint is not None:
        check_checkpoint_fits(checkpoint, loaded.model)
    prep = loaded.preprocessing
    skipped: dict[str, list[BadImage]] = {}
    if data_args.skip_bad_images:
        parts = {"train": train_data, "eval": eval_data, "test": test_data}
        share, workers = data_args.max_bad_image_share, args.dataloader_num_workers
        bar = not args.disable_tqdm and args.process_index == 0  # every process checks (and drops) the same rows
        for role, part in parts.items():
            if part is not None:
                parts[role], skipped[role] = drop_bad_images(part, prep, share, workers, bar)
        train_data, eval_data, test_data = parts["train"], parts["eval"], parts["test"]
    trainer = GazeConsistencyTrainer(
        model=loaded.model,
        args=args,
        train_dataset=ImageClassificationDataset.with_preprocessing(
            train_data, prep, train=True, report_flips=args.follow_flips
        ),
        eval_dataset=ImageClassificationDataset.with_preprocessing(eval_data, prep),
        label_names=label_names,
    )
    trainer.record_samples = data_args.samples_format != "none"
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.last_eval_step != trainer.state.global_step:
        trainer.evaluate()
    samples = trainer.sample_tables.get("eval")
    if test_data is not None:
        trainer.record_samples = False
        trainer.evaluate(ImageClassificationDataset.with_preprocessing(test_data, prep), metric_key_prefix="test")
    base_model = spec.base_model(data_args.pretrained)
    results = _results(trainer, loaded, base_model, data_args, eval_split, test_data is not None, skipped)
    faithful = None
    if data_args.faithfulness and trainer.is_world_process_zero():
        faithful = _faithfulness(trainer, eval_data, prep)
        results.faithfulness = {k: v for k, v in faithful.to_dict().items() if k != "per_image"}
    if samples is not None:
        from .samples import with_run_columns

        samples = with_row_metadata(samples, eval_data)
        samples = with_run_columns(samples, args.cam_method, faithful.per_image_columns() if faithful else None)
    run = TrainingRun(results, trainer.last_eval_result, Path(args.output_dir), samples)
    if trainer.is_world_process_zero():
        _write_outputs(run, trainer.gaze_state(), loaded, data_args, eval_data, args.target)
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
    eval_data = with_row_index(select_split(data, eval_split, data_args.dataset))
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
    base_model: str | None,
    data_args: ModelDataArguments,
    eval_split: str,
    has_test: bool,
    skipped: dict[str, list[BadImage]],
) -> RunResults:
    args = trainer.args
    history = epoch_history(trainer.state.log_history)
    config = RunConfig(
        model=data_args.model,
        architecture=getattr(loaded.model, "default_cfg", {}).get("architecture", type(loaded.model).__name__),
        library=loaded.library,
        base_model=base_model,
        dataset=data_args.dataset,
        eval_split=eval_split,
        test_split=TEST_SPLIT if has_test else None,
        label_names=list(loaded.label_names),
        image_size=list(loaded.preprocessing.image_size),
        channels=loaded.preprocessing.num_channels,
        lambda_max=args.lambda_max,
        t0=args.t0,
        t1=args.t1,
        lambda_per_step=args.lambda_per_step,
        ema_alpha=args.ema_alpha,
        variant=args.variant,
        second_order=args.second_order,
        follow_flips=args.follow_flips,
        per_sample=args.per_sample,
        per_sample_path=trainer.per_sample_path,
        target_layer=trainer.target_name,
        cam_method=args.cam_method,
        epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        batch_size=args.per_device_train_batch_size * args.world_size,
        seed=args.seed,
    )
    kappa, consistency = metric_key("eval", "kappa"), metric_key("eval", CONSISTENCY)
    return RunResults(
        config=config,
        final=trainer.last_eval_metrics,
        final_test=trainer.evaluation_metrics.get("test") if has_test else None,
        history=history,
        pearson_r_kappa_consistency=pearson_r([h.get(kappa) for h in history], [h.get(consistency) for h in history]),
        environment=_environment(args),
        skipped_images={role: [bad.to_dict() for bad in bad_images] for role, bad_images in skipped.items()},
    )


def _faithfulness(trainer: GazeConsistencyTrainer, eval_data: datasets.Dataset, prep: Preprocessing) -> FaithfulnessResult:
    """Deletion and insertion of the final model's maps on the evaluation split."""
    from .faithfulness_report import FaithfulnessSettings, evaluate_faithfulness

    report = evaluate_faithfulness(
        trainer.accelerator.unwrap_model(trainer.model),
        eval_data,
        FaithfulnessSettings(tests=("deletion",), seed=trainer.args.seed),
        preprocessing=prep,
        target=trainer.target_name,
        batch_size=trainer.args.per_device_eval_batch_size,
        progress=False,
        cam_method=trainer.args.cam_method,
    )
    return report


def _environment(args: GazeConsistencyTrainingArguments) -> dict[str, object]:
    """What a rerun needs besides the config to give the same numbers: the versions, the device, the
    number of processes, and the CPU threads per process (reductions are summed in a different order
    with another thread count, and ten epochs amplify the difference)."""
    return {
        "hf_gazecons": __version__, "torch": torch.__version__, "timm": timm.__version__,
        "transformers": transformers.__version__, "device": str(args.device), "processes": args.world_size,
        "cpu_threads": torch.get_num_threads(),
    }  # fmt: skip


def _write_outputs(
    run: TrainingRun,
    gaze_state: dict[str, torch.Tensor],
    loaded: LoadedModel,
    data_args: ModelDataArguments,
    eval_data: datasets.Dataset,
    target: str | int | None,
) -> None:
    """Write everything into a hidden folder first, then move it in, ``results.json`` last (the mark
    of a finished run): a failure on the way leaves no half-written output."""
    from .report import write_report
    from .samples import write_samples

    results, evaluation = run.results, run.evaluation
    run.output_dir.mkdir(parents=True, exist_ok=True)
    output_dir = Path(tempfile.mkdtemp(prefix=".outputs-", dir=run.output_dir))
    try:
        save_model(loaded, output_dir, gaze_state=gaze_state)
        results.save(output_dir)
        title = f"{results.config.architecture}  lambda_max={results.config.lambda_max}"
        plot_learning_curves(results.history, output_dir / "learning_curves.png", title)
        plot_kappa_vs_consistency(results.history, output_dir / "kappa_vs_consistency.png", title)
        plot_class_means(
            {title: evaluation.class_means},
            loaded.label_names,
            output_dir / "class_means.png",
            title=f"Class-mean maps ({results.config.cam_method}, representative gaze)",
        )
        save_class_maps(
            output_dir / CLASS_MAPS_FILE,
            evaluation.class_means,
            loaded.label_names,
            target_layer=evaluation.target_name,
            variant=evaluation.variant,
        )
        if run.samples is not None:
            write_samples(run.samples, output_dir, data_args.samples_format)
            write_extremes(loaded, eval_data, run.samples, output_dir, target, cam_method=results.config.cam_method)
        model_card(results).save(output_dir / "README.md")
        if data_args.report:
            write_report(output_dir)
        publish_files(output_dir, run.output_dir, last=RESULTS_FILE)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
