"""GazeConsistencyTrainer: a transformers ``Trainer`` that adds ``lambda_t * L_CAM^train`` (docs/METHOD.md, section 5).

One forward per step gives the logits (cross-entropy) and the differentiable Grad-CAM maps of the
true class (penalty). Evaluation scores accuracy, Cohen's kappa and gaze consistency in one pass
(``eval_accuracy``, ``eval_kappa``, ``eval_gaze_consistency``) and never adds the penalty. The EMA
class maps are saved into every ``checkpoint-N/`` as ``gazecons_state.safetensors`` and restored
on ``resume_from_checkpoint``. Works under ``accelerate launch`` (DDP): keep
``ddp_find_unused_parameters=False`` (the default here).

Example::

    >>> args = GazeConsistencyTrainingArguments("out", lambda_max=100.0, num_train_epochs=20)
    >>> trainer = GazeConsistencyTrainer(model=model, args=args, train_dataset=train, eval_dataset=val)
    >>> trainer.train()
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Subset
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput

from .cam import CAM, model_logits
from .cam_family import CAM_METHOD_HELP, DEFAULT_CAM_METHOD, cam_methods
from .consistency_result import ConsistencyResult
from .errors import ModelLoadError, TrainingError, UsageError
from .filenames import GAZE_STATE_FILE
from .metric import gaze_consistency
from .output_dir import match_umask
from .per_sample_modes import DEFAULT_PER_SAMPLE, PER_SAMPLE_HELP, PER_SAMPLE_MODES, check_per_sample
from .regularizer import GazeConsistencyLoss, LambdaCurriculum
from .samples import SampleRecorder
from .specs import parse_target
from .targets import resolve_target, unwrap_model
from .training_checks import changed_default, check_report_to, check_training_options, complete_defaults
from .variants import COLLAPSE_SAFE, DEFAULT_VARIANT, VARIANT_HELP, VARIANTS

__all__ = ["GazeConsistencyTrainingArguments", "GazeConsistencyTrainer", "ZERO_MAP_ALARM"]

ZERO_MAP_ALARM = 0.10
"""Share of all-zero maps among the penalised samples above which training warns (once)."""


@dataclass
class GazeConsistencyTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the regulariser's options and the thesis's training settings:
    Adam(W without decay) lr 1e-4, ReduceLROnPlateau(factor 0.1, patience 5) on the validation loss,
    batch 32, evaluation and checkpoints every epoch."""

    lambda_max: float = field(
        default=0.0, metadata={"help": "Final weight of the consistency penalty (negative: diversity)."}
    )
    t0: int = field(default=2, metadata={"help": "Lambda is 0 up to this (1-based) epoch."})
    t1: int = field(default=10, metadata={"help": "Lambda reaches lambda_max at this epoch."})
    lambda_per_step: bool = field(default=False, metadata={"help": "Ramp lambda with the fractional epoch."})
    ema_alpha: float = field(default=0.9, metadata={"help": "EMA factor of the class maps."})
    variant: str = field(
        default=DEFAULT_VARIANT,
        metadata={"help": f"The penalty's {VARIANT_HELP}.", "choices": list(VARIANTS)},
    )
    follow_flips: bool = field(
        default=False,
        metadata={"help": "Compare the map of a horizontally flipped training image with the flipped class map."},
    )
    second_order: bool = field(default=False, metadata={"help": "Differentiate through the channel weights too."})
    per_sample: str = field(
        default=DEFAULT_PER_SAMPLE,
        metadata={"help": f"Per-sample Grad-CAM gradients: {PER_SAMPLE_HELP}.", "choices": list(PER_SAMPLE_MODES)},
    )
    target_layer: str | None = field(
        default=None, metadata={"help": "Grad-CAM target: module name or timm stage index."}
    )
    cam_method: str = field(
        default=DEFAULT_CAM_METHOD,
        metadata={
            "help": f"The penalty's and the evaluation's {CAM_METHOD_HELP}; training needs a differentiable one.",
            "choices": list(cam_methods()),
        },
    )

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into a non-empty --output_dir (its other files stay); without it, train refuses to "
                  "unless it resumes (--resume_from_checkpoint true resumes from the last checkpoint there)."},
    )  # fmt: skip

    learning_rate: float = changed_default("learning_rate", 1e-4, "the study's Adam learning rate")
    lr_scheduler_type: str = changed_default(
        "lr_scheduler_type", "reduce_lr_on_plateau", "the study's, on the validation loss"
    )
    lr_scheduler_kwargs: dict | str | None = changed_default(
        "lr_scheduler_kwargs", None, "with reduce_lr_on_plateau, factor 0.1 and patience 5 (the study's)"
    )
    metric_for_best_model: str | None = changed_default("metric_for_best_model", "loss", "the validation loss")
    per_device_train_batch_size: int = changed_default("per_device_train_batch_size", 32, "the study's batch")
    per_device_eval_batch_size: int = changed_default("per_device_eval_batch_size", 32, "as for training")
    num_train_epochs: float = changed_default("num_train_epochs", 20.0, "the study's analysis runs")
    eval_strategy: str = changed_default("eval_strategy", "epoch", "the study scores every epoch")
    save_strategy: str = changed_default("save_strategy", "epoch", "a checkpoint per evaluation")
    logging_strategy: str = changed_default("logging_strategy", "epoch", "one history entry per epoch")
    remove_unused_columns: bool = changed_default("remove_unused_columns", False, "the collator needs the image column")
    report_to: None | str | list[str] = changed_default("report_to", "none", "no integration unless asked")
    ddp_find_unused_parameters: bool | None = changed_default(
        "ddp_find_unused_parameters", False, "the Grad-CAM of the penalty needs it under DDP"
    )

    def __post_init__(self) -> None:
        check_training_options(self)
        check_per_sample(self.per_sample)
        complete_defaults(self)
        super().__post_init__()
        check_report_to(self.report_to)
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns every epoch

    @property
    def target(self) -> str | int | None:
        """``target_layer`` as GradCAM takes it (an integer string is a timm stage index)."""
        return parse_target(self.target_layer)


class GazeConsistencyTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is ``CE + lambda_t * L_CAM^train`` (docs/METHOD.md, section 5).

    Args:
        *args, **kwargs: those of ``Trainer``; ``args`` must be :class:`GazeConsistencyTrainingArguments`
            and the data sets yield ``{"pixel_values", "labels"}`` (``ImageClassificationDataset``).
        label_names: the class names (default: read from the model's config or head size).

    Raises:
        UsageError: ``args`` is a plain ``TrainingArguments``.
        TrainingError: the loss stops being finite (at that step, before the optimizer step).

    Example::

        >>> args = GazeConsistencyTrainingArguments("out", lambda_max=50.0, variant="robust")
        >>> trainer = GazeConsistencyTrainer(model=model, args=args, train_dataset=train, eval_dataset=val)
        >>> trainer.train()
        >>> trainer.evaluate()["eval_gaze_consistency"]
    """

    args: GazeConsistencyTrainingArguments

    def __init__(self, *args: Any, label_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, GazeConsistencyTrainingArguments):
            raise UsageError("GazeConsistencyTrainer needs GazeConsistencyTrainingArguments (args=...)")
        self.model_accepts_loss_kwargs = False  # compute_loss returns a batch mean
        model = unwrap_model(self.model)
        num_classes = len(label_names) if label_names else _num_classes(model)
        self.class_names = list(label_names) if label_names else [str(i) for i in range(num_classes)]
        self.regularizer = GazeConsistencyLoss(num_classes, self.args.ema_alpha, self.args.variant).to(self.args.device)
        self.curriculum = LambdaCurriculum(self.args.lambda_max, self.args.t0, self.args.t1, self.args.lambda_per_step)
        self.target_name = resolve_target(model, self.args.target).name
        self._cam: CAM | None = None
        self.evaluations: dict[str, ConsistencyResult] = {}  # the last result per metric prefix
        self.evaluation_metrics: dict[str, dict[str, float]] = {}
        self.record_samples = False  # True: each evaluation also keeps its per-image table (sample_tables)
        self.sample_tables: dict[str, Any] = {}  # the last per-image table (pyarrow) per metric prefix
        self.last_eval_step = -1
        # summed over the steps since the last log: penalty, lambda, samples, classes, zero maps, cross-entropy, steps
        self._step_log = torch.zeros(7, dtype=torch.float64)
        self._zero_map_warned = False

    @property
    def last_eval_result(self) -> ConsistencyResult | None:
        """The last evaluation on the evaluation split (``eval_*``)."""
        return self.evaluations.get("eval")

    @property
    def last_eval_metrics(self) -> dict[str, float]:
        return self.evaluation_metrics.get("eval", {})

    @property
    def per_sample_path(self) -> str | None:
        """How the last training step's Grad-CAM got its per-sample gradients (``GradCAM.per_sample_path``);
        None before the first step."""
        return None if self._cam is None else self._cam.per_sample_path

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pixel_values, labels = inputs["pixel_values"], inputs["labels"]
        if not model.training:
            logits = model_logits(model, pixel_values)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.args.label_smoothing_factor)
            return (loss, {"logits": logits}) if return_outputs else loss
        out = self._gradcam(model)(pixel_values, targets=labels)
        loss = F.cross_entropy(out.logits, labels, label_smoothing=self.args.label_smoothing_factor)
        cross_entropy = float(loss.detach())
        penalty = self.regularizer(out.maps, out.logits, labels, out.raw, self._flips(inputs))
        weight = self.curriculum.at_progress(self.state.epoch or 0.0)
        if weight != 0.0:
            loss = loss + weight * penalty.loss
        counts = [penalty.n_samples, penalty.n_classes, penalty.n_zero_maps]
        self._step_log += torch.tensor(
            [float(penalty.loss.detach()), weight, *counts, cross_entropy, 1.0], dtype=torch.float64
        )
        return (loss, {"logits": out.logits}) if return_outputs else loss

    def _flips(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The batch's horizontal-flip flags when ``follow_flips`` asks for them."""
        if not self.args.follow_flips:
            return None
        if "flipped" not in inputs:
            raise TrainingError(
                "--follow_flips needs training items that report their horizontal flip ('flipped'): timm "
                "preprocessing reports it, a transformers processor's own training transforms do not"
            )
        return inputs["flipped"]

    def _gradcam(self, model: nn.Module) -> CAM:
        if self._cam is None or self._cam.model is not model:
            self._cam = CAM(
                model, self.args.target, self.args.cam_method, differentiable=True,
                second_order=self.args.second_order, per_sample=self.args.per_sample,
            )  # fmt: skip
        return self._cam

    def training_step(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], num_items_in_batch: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The Trainer's step, stopped with a TrainingError (before the optimizer step, so no weight
        turns NaN) when the loss is not finite on any process. The Trainer's own logging filters
        such losses out (logged as 0): a diverged run would otherwise finish as a success."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite = torch.isfinite(loss.detach()).all()
        if self.args.world_size > 1:  # every process stops at the same step, none waits in a collective
            finite = self.accelerator.reduce(finite.float(), reduction="sum") == self.args.world_size
        if not bool(finite):
            value = float(loss.detach().float().mean())
            where = f"{value:g}" if not math.isfinite(value) else "not finite on another process"
            raise TrainingError(
                f"the training loss is {where} at step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch or 0.0:.2f}): the run stopped; no model, results or card were written "
                "and nothing was published; lower --learning_rate or --lambda_max"
            )
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs gain, averaged over the steps since the last log and over all processes, the
        ``cross_entropy`` part of the loss, the ``penalty``, ``lambda``, the participating
        ``penalty_samples`` and ``penalty_classes`` per step, and ``zero_map_share``: all-zero maps
        among the participating samples (None if none took part)."""
        if "loss" in logs and self._step_log[-1] > 0:
            # every process logs together; the penalty is each process's share, the counts are global
            totals = self.accelerator.reduce(self._step_log.to(self.args.device), reduction="mean").cpu()
            penalty, weight, samples, classes, zeros, cross_entropy, steps = totals.tolist()
            share = zeros / samples if samples else None
            logs.update(
                cross_entropy=cross_entropy / steps,
                penalty=penalty / steps,
                **{"lambda": weight / steps},
                penalty_samples=samples / steps,
                penalty_classes=classes / steps,
                zero_map_share=share,
            )
            self._step_log.zero_()
            self._warn_on_collapse(share, weight / steps)
        super().log(logs, start_time)

    def _warn_on_collapse(self, share: float | None, weight: float) -> None:
        if self._zero_map_warned or share is None or weight == 0 or share <= ZERO_MAP_ALARM:
            return
        self._zero_map_warned = True
        if self.is_world_process_zero():
            safe = f"; --variant {' or '.join(COLLAPSE_SAFE)} makes an all-zero map the worst case"
            advice = "" if self.args.variant in COLLAPSE_SAFE else safe
            warnings.warn(
                f"{share:.0%} of the penalised CAM maps are all zero at epoch {self.state.epoch:.2f} "
                f"(lambda {weight:g}, variant {self.args.variant}): the gaze is collapsing, and a collapsed map "
                f"scores as perfectly consistent{advice}",
                stacklevel=2,
            )

    def evaluation_loop(
        self,
        dataloader: DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """Accuracy, kappa, gaze consistency and loss in one pass over this rank's shard.

        ``{prefix}_gaze_consistency`` is the paper variant (the study's metric); the pearson and robust
        ones (and the reference one, for a run trained with it) come as ``{prefix}_<variant>_gaze_consistency``."""
        dataset = dataloader.dataset
        if dist.is_available() and dist.is_initialized():
            rank, world = dist.get_rank(), dist.get_world_size()
            dataset = Subset(dataset, range(rank * len(dataset) // world, (rank + 1) * len(dataset) // world))
        loader = DataLoader(
            dataset,
            batch_size=self.args.per_device_eval_batch_size,
            num_workers=self.args.dataloader_num_workers,
            collate_fn=self.data_collator,
        )
        model = self.accelerator.unwrap_model(self.model)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for buffer in model.buffers():  # BatchNorm statistics drift apart per rank: score rank 0's (saved) model
                dist.broadcast(buffer.data, src=0)
        recorder = SampleRecorder() if self.record_samples else None
        result = gaze_consistency(
            model,
            loader,
            variant=self.args.variant,
            target=self.args.target,
            label_names=self.class_names,
            progress=False,
            cam_method=self.args.cam_method,
            samples=recorder,
        )
        if recorder is not None:
            self.sample_tables[metric_key_prefix] = recorder.table
        metrics = result.to_metrics(metric_key_prefix)
        self.evaluations[metric_key_prefix], self.evaluation_metrics[metric_key_prefix] = result, metrics
        if metric_key_prefix == "eval":
            self.last_eval_step = self.state.global_step
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=result.n_samples)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_file(self.gaze_state(), os.path.join(folder, GAZE_STATE_FILE))
            match_umask(folder)  # safetensors files come out 0600, the Trainer's others 0666 & ~umask

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, GAZE_STATE_FILE)
        if os.path.isfile(path):
            self.regularizer.load_state_dict(load_file(path, device=str(self.args.device)))

    def gaze_state(self) -> dict[str, torch.Tensor]:
        """The regulariser's EMA class maps and flags, ready for safetensors."""
        return {k: v.detach().cpu().clone() for k, v in self.regularizer.state_dict().items()}


def _num_classes(model: nn.Module) -> int:
    if hasattr(model, "config") and hasattr(model.config, "num_labels"):
        return int(model.config.num_labels)
    if hasattr(model, "num_classes"):
        return int(model.num_classes)
    raise ModelLoadError(f"cannot tell how many classes {type(model).__name__} has: pass label_names=")
