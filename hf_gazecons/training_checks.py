"""The checks of ``hf-gazecons train``'s options, run when its argument dataclasses are built.

Everything here looks at option values only, so a bad value fails before any data or model is
loaded, with one line naming the option (:class:`~hf_gazecons.errors.UsageError`, exit 2). What
needs the file system or the Hub (the output folder, the checkpoint, the token) is checked at the
start of :func:`hf_gazecons.finetune.train`.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from dataclasses import MISSING, Field, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import TrainingArguments

from .cam_family import check_cam_method
from .checks import check_curriculum, check_fields, parse_bool, require
from .errors import UsageError
from .output_dir import check_output_dir, last_checkpoint

__all__ = [
    "changed_default",
    "check_checkpoint_fits",
    "check_report_to",
    "check_training_options",
    "complete_defaults",
    "has_accelerator",
    "launched_processes",
    "prepare_run",
    "resolve_checkpoint",
]

_INTEGRATION_MODULES = {"azure_ml": "azureml", "flyte": "flytekit"}  # not covered by transformers' own detection
_INTEGRATION_PACKAGES = {"azure_ml": "azureml-core", "flyte": "flytekit", "kubeflow": "kubeflow-training"}


def changed_default(name: str, default: Any, why: str) -> Field:
    """A dataclass field for ``TrainingArguments.<name>`` with this project's ``default``: the help is
    transformers' own plus what the default is changed from, and why."""
    parent = TrainingArguments.__dataclass_fields__[name]
    was = parent.default if parent.default is not MISSING else parent.default_factory()
    text = parent.metadata.get("help", "").rstrip()
    text += f" hf-gazecons default: {default!r} ({why}; transformers': {was!r})."
    metadata = {**parent.metadata, "help": text}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_training_options(args: Any) -> None:
    """The regulariser's options and the ``TrainingArguments`` that would otherwise fail mid-run: each
    option by its rule, then the rules that relate options.

    Runs before ``TrainingArguments.__post_init__`` (so enum options may still be plain strings)."""
    check_fields(args, dash="_")  # each option's own rule (hf_gazecons.checks.OPTION_RULES)
    check_curriculum(args.t0, args.t1)
    try:
        check_cam_method(args.cam_method, training=True)
    except UsageError as error:
        raise UsageError(f"--cam_method: {error}") from None
    epochs, steps = args.num_train_epochs, args.max_steps
    require(
        epochs > 0 or steps > 0, f"--num_train_epochs must be a finite number > 0 (or --max_steps > 0), got {epochs}"
    )
    require(
        args.lambda_max == 0 or steps > 0 or epochs > args.t0,
        f"--lambda_max {args.lambda_max:g} never switches on: lambda is 0 through epoch t0={args.t0} and the run "
        f"has {epochs:g} epoch(s); train longer or lower --t0 (e.g. --t0 0)",
    )
    require(
        not args.torch_compile,
        "--torch_compile is not supported: the penalty differentiates Grad-CAM maps through the target layer's "
        "activation, which a compiled graph does not expose; train without it (hf-gazecons score works on a "
        "compiled model)",
    )
    if _value(args.eval_strategy) == "no" and _value(args.lr_scheduler_type) == "reduce_lr_on_plateau":
        raise UsageError(
            "--eval_strategy no leaves the default learning-rate schedule, reduce_lr_on_plateau (the study's), "
            "without the validation loss it steps on; also pass --lr_scheduler_type constant (or linear, cosine)"
        )


def complete_defaults(args: Any) -> None:
    """Defaults that depend on other options, set before ``TrainingArguments.__post_init__``."""
    if _value(args.lr_scheduler_type) == "reduce_lr_on_plateau" and not args.lr_scheduler_kwargs:
        args.lr_scheduler_kwargs = {"factor": 0.1, "patience": 5}  # the study's
    if not args.use_cpu and launched_processes() > 1 and not has_accelerator():
        args.use_cpu = True  # `accelerate launch --multi_gpu` without GPUs: DDP on CPU, not N separate runs
    if not args.use_cpu and args.bf16 and not has_accelerator():
        args.use_cpu = True  # transformers refuses bf16 without a GPU unless told to run on the CPU


def check_report_to(report_to: list[str]) -> None:
    """Every ``--report_to`` integration is one transformers knows and its package is installed."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    available = set(get_available_reporting_integrations())
    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            known = ", ".join(INTEGRATION_TO_CALLBACK)
            raise UsageError(f"--report_to {name}: unknown integration; choose from {known}, all or none")
        module = _INTEGRATION_MODULES.get(name)
        if name not in available and not (module and importlib.util.find_spec(module)):
            raise UsageError(
                f"--report_to {name}: the {name} integration is not installed; "
                f"`pip install {_INTEGRATION_PACKAGES.get(name, name)}`, or pass --report_to none"
            )


def prepare_run(args: Any) -> str | None:
    """At the start of a run, before anything is loaded: the output folder can be written and is
    empty unless the run resumes or ``--overwrite_output_dir`` is given (the transformers
    convention), the checkpoint to resume from (returned) exists, and launched processes form a
    process group (else each would train on its own and all would write the same folder)."""
    output_dir = check_output_dir(args.output_dir, "--output_dir", must_be_empty=False)
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if checkpoint is None and not args.overwrite_output_dir and output_dir.is_dir() and any(output_dir.iterdir()):
        last = last_checkpoint(output_dir)
        resume = f"--resume_from_checkpoint true to continue from {last.name}, " if last else ""
        raise UsageError(
            f"output directory {str(output_dir)!r} is not empty; pass {resume}--overwrite_output_dir true to "
            "write over it, or choose another --output_dir"
        )
    launched = launched_processes()
    if launched > 1 and args.world_size != launched:
        raise UsageError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but they form no process group, so each "
            "would train on its own; on a machine without GPUs pass --use_cpu true"
        )
    return checkpoint


def resolve_checkpoint(value: str | None, output_dir: Path) -> str | None:
    """``--resume_from_checkpoint``: true or ``last`` (the last complete ``checkpoint-N`` of
    ``output_dir``, see :func:`~hf_gazecons.output_dir.last_checkpoint`), false, empty or None
    (start afresh), or a checkpoint folder, which must exist. True and false are the words of
    :func:`~hf_gazecons.checks.parse_bool`."""
    word = "" if value is None else str(value).strip().lower()
    try:
        resume = word == "last" or (word != "" and parse_bool(word))
    except ValueError:
        resume = None  # a folder
    if resume is False:
        return None
    if resume:
        last = last_checkpoint(output_dir) if output_dir.is_dir() else None
        if last is None:
            raise UsageError(
                f"--resume_from_checkpoint true: no complete checkpoint-N folder in {str(output_dir)!r} to resume from"
            )
        checkpoint = last
    else:
        checkpoint = Path(value).expanduser()
        if not checkpoint.is_dir():
            raise UsageError(f"--resume_from_checkpoint {value!r}: no such folder")
    if not (checkpoint / "trainer_state.json").is_file():
        raise UsageError(
            f"--resume_from_checkpoint: {str(checkpoint)!r} is not a complete checkpoint (no trainer_state.json); "
            "name a checkpoint-N folder written by train"
        )
    return str(checkpoint)


def check_checkpoint_fits(checkpoint: str, model: nn.Module) -> None:
    """The checkpoint's weights have the names and shapes of ``model``'s (same architecture, class
    count and input channels); otherwise resuming would fail deep inside ``load_state_dict``."""
    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        return  # another weights format: the Trainer checks it
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with safe_open(str(path), "pt") as saved:
        shapes = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}  # noqa: SIM118
    foreign = [name for name in shapes if name not in expected]
    differ = [name for name in shapes if name in expected and shapes[name] != expected[name]]
    if foreign or differ:
        first = (
            f"{differ[0]} is {list(shapes[differ[0]])} there but {list(expected[differ[0]])} here"
            if differ
            else f"it has {foreign[0]}, which this model has not"
        )
        count = len(foreign) + len(differ)
        raise UsageError(
            f"--resume_from_checkpoint {checkpoint!r} holds another model's weights (another architecture, "
            f"class count or channel count): {first}" + (f", and {count - 1} more differ" if count > 1 else "")
        )


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE`` of accelerate launch / torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def has_accelerator() -> bool:
    """A GPU (or another torch accelerator) is available to this process."""
    accelerator = getattr(torch, "accelerator", None)
    return bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()


def _value(option: Any) -> Any:
    return getattr(option, "value", option)
