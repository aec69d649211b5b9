"""GazeConsistencyTrainer: a transformers ``Trainer`` that adds ``lambda_t * L_CAM^train`` (SPEC section 3).

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

from .cam import GradCAM, model_logits
from .errors import GazeConsError
from .filenames import GAZE_STATE_FILE
from .metric import ConsistencyResult, gaze_consistency
from .regularizer import GazeConsistencyLoss, LambdaCurriculum
from .targets import resolve_target, unwrap_model
from .variants import VARIANT_HELP, VARIANTS

__all__ = ["GazeConsistencyTrainingArguments", "GazeConsistencyTrainer", "result_metrics", "ZERO_MAP_ALARM"]

ZERO_MAP_ALARM = 0.10
"""Share of all-zero maps among the penalised samples above which training warns (once)."""


@dataclass
class GazeConsistencyTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the regulariser's options and the study's defaults (SPEC section 4):
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
        default="paper",
        metadata={"help": f"The penalty's {VARIANT_HELP}.", "choices": list(VARIANTS)},
    )
    second_order: bool = field(default=False, metadata={"help": "Differentiate through the channel weights too."})
    target_layer: str | None = field(
        default=None, metadata={"help": "Grad-CAM target: module name or timm stage index."}
    )

    learning_rate: float = 1e-4
    lr_scheduler_type: str = "reduce_lr_on_plateau"
    lr_scheduler_kwargs: dict | str | None = field(default_factory=lambda: {"factor": 0.1, "patience": 5})
    metric_for_best_model: str | None = "loss"
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 32
    num_train_epochs: float = 20.0
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    logging_strategy: str = "epoch"
    remove_unused_columns: bool = False
    report_to: None | str | list[str] = "none"
    ddp_find_unused_parameters: bool | None = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lambda_max != 0 and self.max_steps <= 0 and self.num_train_epochs <= self.t0:
            raise GazeConsError(
                f"--lambda_max {self.lambda_max:g} never switches on: lambda is 0 through epoch t0={self.t0} and "
                f"the run has {self.num_train_epochs:g} epoch(s); train longer or lower --t0 (e.g. --t0 0)"
            )
        if self.torch_compile:
            raise GazeConsError(
                "--torch_compile is not supported: the penalty differentiates Grad-CAM maps through the target "
                "layer's activation, which a compiled graph does not expose; train without it "
                "(hf-gazecons score works on a compiled model)"
            )
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns every epoch

    @property
    def target(self) -> str | int | None:
        """``target_layer`` as GradCAM takes it (an integer string is a timm stage index)."""
        if self.target_layer is None:
            return None
        return int(self.target_layer) if self.target_layer.lstrip("-").isdigit() else self.target_layer


class GazeConsistencyTrainer(Trainer):
    """``Trainer`` whose loss is ``CE + lambda_t * L_CAM^train``; see the module docstring."""

    args: GazeConsistencyTrainingArguments

    def __init__(self, *args: Any, label_names: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, GazeConsistencyTrainingArguments):
            raise TypeError("GazeConsistencyTrainer needs GazeConsistencyTrainingArguments")
        self.model_accepts_loss_kwargs = False  # compute_loss returns a batch mean
        model = unwrap_model(self.model)
        num_classes = len(label_names) if label_names else _num_classes(model)
        self.class_names = list(label_names) if label_names else [str(i) for i in range(num_classes)]
        self.regularizer = GazeConsistencyLoss(num_classes, self.args.ema_alpha, self.args.variant).to(self.args.device)
        self.curriculum = LambdaCurriculum(self.args.lambda_max, self.args.t0, self.args.t1, self.args.lambda_per_step)
        self.target_name = resolve_target(model, self.args.target).name
        self._cam: GradCAM | None = None
        self.evaluations: dict[str, ConsistencyResult] = {}  # the last result per metric prefix
        self.evaluation_metrics: dict[str, dict[str, float]] = {}
        self.last_eval_step = -1
        self._penalty_log = torch.zeros(6, dtype=torch.float64)  # penalty, lambda, samples, classes, zeros, steps
        self._zero_map_warned = False

    @property
    def last_eval_result(self) -> ConsistencyResult | None:
        """The last evaluation on the evaluation split (``eval_*``)."""
        return self.evaluations.get("eval")

    @property
    def last_eval_metrics(self) -> dict[str, float]:
        return self.evaluation_metrics.get("eval", {})

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
        penalty = self.regularizer(out.maps, out.logits, labels, out.raw)
        weight = self.curriculum.at_progress(self.state.epoch or 0.0)
        if weight != 0.0:
            loss = loss + weight * penalty.loss
        self._penalty_log += torch.tensor(
            [float(penalty.loss.detach()), weight, penalty.n_samples, penalty.n_classes, penalty.n_zero_maps, 1.0],
            dtype=torch.float64,
        )
        return (loss, {"logits": out.logits}) if return_outputs else loss

    def _gradcam(self, model: nn.Module) -> GradCAM:
        if self._cam is None or self._cam.model is not model:
            self._cam = GradCAM(model, self.args.target, differentiable=True, second_order=self.args.second_order)
        return self._cam

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs gain the mean ``penalty`` (over all processes), ``lambda``, the participating
        ``penalty_samples`` and ``penalty_classes`` per step, and ``zero_map_share``: all-zero maps
        among the participating samples since the last log (None if none took part)."""
        if "loss" in logs and self._penalty_log[-1] > 0:
            # every process logs together; the penalty is each process's share, the counts are global
            totals = self.accelerator.reduce(self._penalty_log.to(self.args.device), reduction="mean").cpu()
            penalty, weight, samples, classes, zeros, steps = totals.tolist()
            share = zeros / samples if samples else None
            logs.update(
                penalty=penalty / steps,
                **{"lambda": weight / steps},
                penalty_samples=samples / steps,
                penalty_classes=classes / steps,
                zero_map_share=share,
            )
            self._penalty_log.zero_()
            self._warn_on_collapse(share, weight / steps)
        super().log(logs, start_time)

    def _warn_on_collapse(self, share: float | None, weight: float) -> None:
        if self._zero_map_warned or share is None or weight == 0 or share <= ZERO_MAP_ALARM:
            return
        self._zero_map_warned = True
        if self.is_world_process_zero():
            advice = "" if self.args.variant == "robust" else "; --variant robust makes an all-zero map the worst case"
            warnings.warn(
                f"{share:.0%} of the penalised Grad-CAM maps are all zero at epoch {self.state.epoch:.2f} "
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

        ``{prefix}_gaze_consistency`` is the paper variant (the study's metric); the robust one (and
        the reference one, for a run trained with it) come as ``{prefix}_<variant>_gaze_consistency``."""
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
        result = gaze_consistency(
            model,
            loader,
            variant=self.args.variant,
            target=self.args.target,
            label_names=self.class_names,
            progress=False,
        )
        metrics = result_metrics(result, metric_key_prefix)
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

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, GAZE_STATE_FILE)
        if os.path.isfile(path):
            self.regularizer.load_state_dict(load_file(path, device=str(self.args.device)))

    def gaze_state(self) -> dict[str, torch.Tensor]:
        """The regulariser's EMA class maps and flags, ready for safetensors."""
        return {k: v.detach().cpu().clone() for k, v in self.regularizer.state_dict().items()}


def result_metrics(result: ConsistencyResult, prefix: str = "eval") -> dict[str, float]:
    """Flat metrics of a result: loss, accuracy, kappa, gaze consistency (paper variant, per class
    too; the other variants computed beside it as ``{prefix}_<variant>_gaze_consistency``), all-zero
    map share, localisation."""
    metrics = {
        f"{prefix}_loss": result.loss,
        f"{prefix}_accuracy": result.accuracy,
        f"{prefix}_kappa": result.kappa,
        f"{prefix}_gaze_consistency": result.values["paper"],
        f"{prefix}_zero_map_share": result.zero_map_share,
    }
    for variant, value in result.values.items():
        if variant != "paper":
            metrics[f"{prefix}_{variant}_gaze_consistency"] = value
    for name, per_class in result.per_class.items():
        metrics[f"{prefix}_gaze_consistency_{name}"] = per_class.values["paper"]
    if result.localization is not None:
        metrics[f"{prefix}_energy_pointing_game"] = result.localization.energy_pointing_game
        metrics[f"{prefix}_pointing_game"] = result.localization.pointing_game
    return metrics


def _num_classes(model: nn.Module) -> int:
    if hasattr(model, "config") and hasattr(model.config, "num_labels"):
        return int(model.config.num_labels)
    if hasattr(model, "num_classes"):
        return int(model.num_classes)
    raise ValueError(f"cannot tell how many classes {type(model).__name__} has: pass label_names=")
