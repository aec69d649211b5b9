"""The record of one training run, ``results.json``: what was trained how, and what it scored.

:class:`RunResults` is written by ``hf-gazecons train`` and read by the sweep's tables, the sanity
pass, the model card and the demo; nobody else reads or writes the file. Metrics are flat
``{prefix}_{name}`` keys (``eval_`` for the evaluation split, ``test_`` for the test split), with
the names of :data:`METRIC_NAMES` (written by ``ConsistencyResult.to_metrics``);
:meth:`RunResults.metric` reads them.

    >>> record = RunResults.load("out/resnet18-l100")
    >>> record.config.lambda_max, record.metric("gaze_consistency"), record.metric("accuracy", "test")
    (100.0, 0.0123, 0.945)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .errors import DataError
from .filenames import RESULTS_FILE
from .jsonio import write_json

__all__ = ["METRIC_NAMES", "RunConfig", "RunResults", "Split", "epoch_history", "epoch_value", "metric_key"]

Split = Literal["eval", "test"]

METRIC_NAMES = (
    "loss",
    "accuracy",
    "kappa",
    "gaze_consistency",
    "zero_map_share",
    "energy_pointing_game",
    "pointing_game",
)
"""The metrics of an evaluation, besides ``<variant>_gaze_consistency`` (the other deviation
variants) and ``gaze_consistency_<class>`` (per class, paper variant)."""

# Trainer log keys that the history keeps; those that describe the training batches get "train_"
_TRAINING_LOGS = ("loss", "cross_entropy", "penalty", "lambda", "learning_rate", "zero_map_share")
_TRAINING_BATCH_LOGS = ("loss", "cross_entropy", "penalty", "zero_map_share")


def metric_key(prefix: str, name: str) -> str:
    """The flat key of metric ``name`` evaluated on ``prefix`` (``eval``, ``test``): ``eval_accuracy``."""
    return f"{prefix}_{name}"


@dataclass
class RunConfig:
    """How a run was trained (``results.json``'s ``config``): what ``train`` writes; a record needs
    at least the model, lambda_max and seed to be a run of a sweep."""

    model: str
    lambda_max: float
    seed: int
    architecture: str | None = None
    library: str | None = None
    dataset: str | None = None
    eval_split: str | None = None
    label_names: list[str] = field(default_factory=list)
    variant: str = "paper"
    base_model: str | None = None
    test_split: str | None = None
    image_size: list[int] | None = None
    channels: int | None = None
    t0: int | None = None
    t1: int | None = None
    lambda_per_step: bool = False
    ema_alpha: float | None = None
    second_order: bool = False
    follow_flips: bool = False
    target_layer: str | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RunResults:
    """``results.json``: the ``config``, the ``final`` evaluation-split metrics (``eval_*``), the
    ``final_test`` test-split metrics (``test_*``, None without a test split), one ``history`` row
    per logged epoch (:func:`epoch_history`), the Pearson r of kappa and L_CAM over it, and the
    ``environment`` it ran in (versions, device, processes, CPU threads: on CPU, a seed reproduces a
    run bit for bit with the same code and thread count, not across thread counts)."""

    config: RunConfig
    final: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    final_test: dict[str, Any] | None = None
    pearson_r_kappa_consistency: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    def metric(self, name: str, split: Split = "eval") -> Any:
        """The final value of metric ``name`` (e.g. ``"gaze_consistency"``) on ``split``; None if absent."""
        metrics = self.final if split == "eval" else self.final_test or {}
        return metrics.get(metric_key(split, name))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "config": asdict(self.config)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResults:
        return cls(
            config=RunConfig.from_dict(data["config"]),
            final=dict(data.get("final") or {}),
            history=list(data.get("history") or []),
            final_test=data.get("final_test"),
            pearson_r_kappa_consistency=data.get("pearson_r_kappa_consistency"),
            environment=dict(data.get("environment") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> RunResults:
        """Read ``results.json`` from a run folder (or the file itself).

        Raises:
            DataError: the file is missing, is not JSON, or lacks the ``config`` of a run.
        """
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        try:
            data = json.loads(path.read_text())
            return cls.from_dict(data)
        except FileNotFoundError:
            raise DataError(f"{str(path)!r} does not exist: not a finished hf-gazecons training run") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"{str(path)!r} is not a readable results.json ({type(error).__name__}: {error})") from None

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/results.json`` (strict JSON: null where a value is undefined)."""
        return write_json(Path(directory) / RESULTS_FILE, self.to_dict())


def epoch_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per logged point of ``Trainer.state.log_history``: the training logs (``train_loss``,
    ``train_cross_entropy``, ``train_penalty``, ``lambda``, ``learning_rate``,
    ``train_zero_map_share``) and the evaluation metrics (``eval_*``) that share an ``epoch``
    (fractional when logging or evaluating within an epoch: 0.5, 1, 1.5, ...)."""
    by_epoch: dict[float, dict[str, Any]] = {}
    for entry in log_history:
        if "epoch" not in entry or "train_runtime" in entry:
            continue
        epoch = epoch_value(entry["epoch"])
        row = by_epoch.setdefault(epoch, {"epoch": epoch})
        for key, value in entry.items():
            if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")):
                row[key] = value
            elif key in _TRAINING_LOGS:
                row["train_" + key if key in _TRAINING_BATCH_LOGS else key] = value
    return [by_epoch[e] for e in sorted(by_epoch)]


def epoch_value(epoch: float) -> int | float:
    """``Trainer.state.epoch`` as a history key: a whole number as an int, a fraction to 4 decimals."""
    epoch = round(float(epoch), 4)
    return int(epoch) if epoch.is_integer() else epoch
