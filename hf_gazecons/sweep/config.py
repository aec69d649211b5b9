"""What a sweep is: :class:`SweepConfig`, its defaults and presets, and the command that reproduces it.

>>> config = resolve_config({"preset": "smoke", "output_dir": "/tmp/smoke", "seeds": [0, 1]})
>>> explicit_command(config)
'hf-gazecons sweep --backbones test_resnet test_efficientnet --lambdas 0 100 --seeds 0 1 ...'
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..checks import check_curriculum, check_fields
from ..errors import UsageError
from ..formatting import fmt_exact
from ..per_sample_modes import DEFAULT_PER_SAMPLE
from ..variants import DEFAULT_VARIANT

__all__ = [
    "DEFAULTS",
    "PRESETS",
    "SweepConfig",
    "explicit_command",
    "format_lambda",
    "recorded_config",
    "resolve_config",
]


@dataclass
class SweepConfig:
    """Everything that defines a sweep (the CLI's options, after the preset is applied)."""

    output_dir: str
    backbones: list[str]
    lambdas: list[float]
    seeds: list[int]
    epochs: int
    t0: int
    t1: int
    dataset: str
    image_size: int | None = None
    grayscale: bool = False
    pretrained: bool = False
    learning_rate: float = 1e-4
    batch_size: int = 32
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    ema_alpha: float = 0.9
    variant: str = DEFAULT_VARIANT
    target_layer: str | None = None
    cam_method: str = "gradcam"
    per_sample: str = DEFAULT_PER_SAMPLE
    train_args: list[str] = field(default_factory=list)
    parallel: int | None = None
    threads: int | None = None
    keep_checkpoints: bool = False
    preset: str | None = None


DEFAULTS: dict[str, Any] = {
    # a CPU-sized ladder of increasing depth on the built-in planted-object data
    "backbones": ["resnet10t", "resnet18", "resnet34"],
    "lambdas": [-100.0, 0.0, 50.0, 100.0, 500.0],
    "seeds": [0, 1, 2],
    "epochs": 10,
    "t0": 2,
    "t1": 5,
    "dataset": "builtin:shapes?size=64&jitter=0.08",
    "image_size": 64,
    "learning_rate": 1e-3,
    "batch_size": 32,
}

PRESETS: dict[str, dict[str, Any]] = {
    # 1-3 minutes on 2 CPU cores: 2 tiny backbones x 2 lambdas x 1 seed x 3 epochs (3 epochs: the
    # kappa-L_CAM correlation is defined)
    "smoke": {
        "backbones": ["test_resnet", "test_efficientnet"],
        "lambdas": [0.0, 100.0],
        "seeds": [0],
        "epochs": 3,
        "t0": 0,
        "t1": 2,
        "dataset": "builtin:shapes?size=64&n_train=24&n_val=8&n_test=1",
        "image_size": 64,
        "learning_rate": 3e-3,
        "batch_size": 16,
        "target_layer": "-2",
        "parallel": 2,
    },
    # the thesis's regulariser sweep: five CNNs of increasing depth, pretrained,
    # grayscale 224 px, Adam 1e-4, batch 32, 50 epochs, T0 2, T1 10, six seeds. Needs GPUs.
    "study": {
        "backbones": ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
        "lambdas": [-100.0, 0.0, 50.0, 100.0, 500.0],
        "seeds": [0, 1, 2, 3, 4, 5],
        "epochs": 50,
        "t0": 2,
        "t1": 10,
        "dataset": "Simezu/brain-tumour-MRI-scan",
        "image_size": 224,
        "grayscale": True,
        "pretrained": True,
        "learning_rate": 1e-4,
        "batch_size": 32,
        "ema_alpha": 0.9,
        "variant": DEFAULT_VARIANT,
    },
    # the CPU sweep of docs/RESULTS.md (small jitter; override --dataset for the large-jitter one);
    # 50 runs of ~30 s, two at a time: about 12-15 minutes on 2 free cores
    "cpu": {
        "backbones": ["test_resnet", "test_efficientnet"],
        "lambdas": [-100.0, 0.0, 50.0, 100.0, 500.0],
        "seeds": [0, 1, 2, 3, 4],
        "epochs": 10,
        "t0": 2,
        "t1": 5,
        "dataset": "builtin:shapes?size=64&jitter=0.05&n_val=50",
        "image_size": 64,
        "learning_rate": 3e-3,
        "batch_size": 32,
        "target_layer": "-2",
        "per_sample": "exact",  # docs/RESULTS.md's sweeps computed exact per-sample maps
        "parallel": 2,
    },
}


def resolve_config(options: Mapping[str, Any]) -> SweepConfig:
    """``options`` (``None`` = not given) over the preset's values over :data:`DEFAULTS`, each value
    checked by its option's rule (:mod:`hf_gazecons.checks`), and ``t1 > t0``.

    Raises:
        UsageError: an unknown preset, no output folder, an empty grid or a value its rule refuses.
    """
    preset = options.get("preset")
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values: dict[str, Any] = dict(DEFAULTS)
    values.update(PRESETS.get(preset, {}) if preset else {})
    values.update({k: v for k, v in options.items() if v is not None})
    if not values.get("output_dir"):
        raise UsageError("a sweep needs --output-dir")
    known = {f.name for f in fields(SweepConfig)}
    config = SweepConfig(**{k: v for k, v in values.items() if k in known})
    check_fields(config)
    check_curriculum(config.t0, config.t1)
    if not config.backbones or not config.lambdas or not config.seeds:
        raise UsageError("a sweep needs at least one backbone, one lambda and one seed")
    config.lambdas = [float(v) for v in config.lambdas]
    config.output_dir = str(config.output_dir)
    return config


def format_lambda(value: float) -> str:
    """``100.0`` -> ``"100"``, ``-0.5`` -> ``"-0.5"`` (folder names, tables and commands): exact, so
    that two lambdas never share a folder and a run trains at the lambda it was given."""
    return fmt_exact(value)


def recorded_config(output_dir: str | Path) -> SweepConfig | None:
    """The configuration of the newest invocation recorded in ``output_dir`` (``sweep.json``, or a
    shard's ``sweep.shard-K-of-N.json``); None when there is none."""
    newest: tuple[str, dict[str, Any]] | None = None
    for path in Path(output_dir).glob("sweep*.json"):
        try:
            last = json.loads(path.read_text())[-1]
        except (OSError, ValueError, IndexError, KeyError, TypeError):
            continue
        if isinstance(last, dict) and "config" in last and (newest is None or last.get("time", "") > newest[0]):
            newest = (last.get("time", ""), last["config"])
    if newest is None:
        return None
    known = {f.name for f in fields(SweepConfig)}
    return SweepConfig(**{k: v for k, v in newest[1].items() if k in known})


def explicit_command(config: SweepConfig) -> str:
    """An ``hf-gazecons sweep`` command line with every option spelled out (no preset needed)."""
    parts = ["hf-gazecons", "sweep",
             "--backbones", *config.backbones,
             "--lambdas", *[format_lambda(v) for v in config.lambdas],
             "--seeds", *[str(s) for s in config.seeds],
             "--epochs", str(config.epochs), "--t0", str(config.t0), "--t1", str(config.t1),
             "--dataset", config.dataset,
             "--learning-rate", fmt_exact(config.learning_rate), "--batch-size", str(config.batch_size),
             "--ema-alpha", fmt_exact(config.ema_alpha), "--variant", config.variant,
             "--cam-method", config.cam_method, "--per-sample", config.per_sample]  # fmt: skip
    if config.image_size:
        parts += ["--image-size", str(config.image_size)]
    if config.grayscale:
        parts += ["--grayscale"]
    if config.pretrained:
        parts += ["--pretrained"]
    if config.max_train_samples:
        parts += ["--max-train-samples", str(config.max_train_samples)]
    if config.max_eval_samples:
        parts += ["--max-eval-samples", str(config.max_eval_samples)]
    if config.target_layer is not None:
        parts += [f"--target-layer={config.target_layer}"]
    if config.train_args:
        parts += [f"--train-args={shlex.join(config.train_args)}"]
    if config.parallel:
        parts += ["--parallel", str(config.parallel)]
    if config.threads:
        parts += ["--threads", str(config.threads)]
    if config.keep_checkpoints:
        parts += ["--keep-checkpoints"]
    parts += ["--output-dir", config.output_dir]
    return shlex.join(parts)
