"""The record of one training run, ``results.json``: what was trained how, and what it scored.

:class:`RunResults` is written by ``hf-gazecons train`` and read by the sweep's tables, the sanity
pass, the model card and the demo; nobody else reads or writes the file, and
:func:`finished_runs` finds them under a folder. Metrics are flat ``{prefix}_{name}`` keys
(``eval_`` for the evaluation split, ``test_`` for the test split, ``train_`` for the training
batches' logs), and every key and name is built here: :data:`METRIC_NAMES`, :func:`metric_key`,
:func:`variant_metric`, :func:`class_metric` and :func:`history_key`. ``ConsistencyResult.to_metrics``
writes them and :meth:`RunResults.metric` reads them.

    >>> record = RunResults.load("out/resnet18-l100")
    >>> record.config.lambda_max, record.metric("gaze_consistency"), record.metric("accuracy", "test")
    (100.0, 0.0123, 0.945)
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .cam_family import DEFAULT_CAM_METHOD
from .errors import DataError
from .filenames import RESULTS_FILE
from .jsonio import write_json
from .variants import DEFAULT_VARIANT

__all__ = [
    "CONSISTENCY",
    "METRIC_NAMES",
    "RunConfig",
    "RunResults",
    "Split",
    "class_metric",
    "epoch_history",
    "epoch_value",
    "finished_runs",
    "history_key",
    "metric_key",
    "reference_metric",
    "variant_metric",
]

Split = Literal["eval", "test"]

CONSISTENCY = "gaze_consistency"
"""The name of L_CAM under the study's variant (docs/METHOD.md, section 4)."""

METRIC_NAMES = (
    "loss",
    "accuracy",
    "kappa",
    CONSISTENCY,
    "zero_map_share",
    "energy_pointing_game",
    "pointing_game",
    "chance_energy_pointing_game",
    "perfect_energy_pointing_game",
    "chance_pointing_game",
    "perfect_pointing_game",
    "pointing_game_tolerance",
    "localization_zero_map_share",
)
"""The metrics of an evaluation, besides :func:`variant_metric` (the other deviation variants) and
:func:`class_metric` (per class: L_CAM under the study's variant, both games and their
:func:`reference_metric` values)."""

# Trainer log keys that the history keeps; those that describe the training batches get "train_"
_TRAINING_LOGS = ("loss", "cross_entropy", "penalty", "lambda", "learning_rate", "zero_map_share")
_TRAINING_BATCH_LOGS = ("loss", "cross_entropy", "penalty", "zero_map_share")


def metric_key(prefix: str, name: str) -> str:
    """The flat key of metric ``name`` evaluated on ``prefix`` (``eval``, ``test``): ``eval_accuracy``."""
    return f"{prefix}_{name}"


def variant_metric(variant: str) -> str:
    """The name of L_CAM under ``variant``: ``gaze_consistency`` for the study's, ``robust_gaze_consistency``
    for another."""
    return CONSISTENCY if variant == DEFAULT_VARIANT else f"{variant}_{CONSISTENCY}"


def class_metric(label: str, metric: str = CONSISTENCY) -> str:
    """The name of class ``label``'s value of ``metric``: ``gaze_consistency_<label>`` (L_CAM under the
    study's variant), ``pointing_game_<label>``."""
    return f"{metric}_{label}"


def reference_metric(reference: Literal["chance", "perfect"], metric: str) -> str:
    """The name of ``metric``'s value for a reference map (docs/METHOD.md, section 10): ``chance_<metric>``
    (a uniform map, a random peak) or ``perfect_<metric>`` (the mask at the map's grid)."""
    return f"{reference}_{metric}"


def history_key(log: str) -> str:
    """The key of the Trainer log ``log`` in a history row: ``train_<log>`` for what describes the
    training batches (``loss``, ``cross_entropy``, ``penalty``, ``zero_map_share``), else ``log``
    (``lambda``, ``learning_rate``)."""
    return metric_key("train", log) if log in _TRAINING_BATCH_LOGS else log


@dataclass
class RunConfig:
    """How a run was trained (``results.json``'s ``config``): what ``train`` writes; a record needs
    at least the model, lambda_max and seed to be a run of a sweep. ``per_sample`` is the Grad-CAM
    mode asked for and ``per_sample_path`` the way training's maps were computed
    (``GradCAM.per_sample_path``); both are None in records written before they existed, whose
    training maps were exact."""

    model: str
    lambda_max: float
    seed: int
    architecture: str | None = None
    library: str | None = None
    dataset: str | None = None
    eval_split: str | None = None
    label_names: list[str] = field(default_factory=list)
    variant: str = DEFAULT_VARIANT
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
    per_sample: str | None = None
    per_sample_path: str | None = None
    target_layer: str | None = None
    cam_method: str = DEFAULT_CAM_METHOD
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
    run bit for bit with the same code and thread count, not across thread counts), with
    ``--skip_bad_images``, the images left out (``index``, ``path``, ``reason``) of the training, evaluation and
    test data (``skipped_images``: ``train``, ``eval``, ``test``) and, where it was asked for
    (``--faithfulness``), the ``faithfulness`` of the final model's maps on the evaluation split
    (:meth:`~hf_gazecons.faithfulness_report.FaithfulnessResult.to_dict` without its per-image rows)."""

    config: RunConfig
    final: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    final_test: dict[str, Any] | None = None
    pearson_r_kappa_consistency: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    skipped_images: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faithfulness: dict[str, Any] | None = None

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
            skipped_images=dict(data.get("skipped_images") or {}),
            faithfulness=data.get("faithfulness"),
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
            if key.startswith(metric_key("eval", "")) and not key.endswith(("_runtime", "_per_second")):
                row[key] = value
            elif key in _TRAINING_LOGS:
                row[history_key(key)] = value
    return [by_epoch[e] for e in sorted(by_epoch)]


def epoch_value(epoch: float) -> int | float:
    """``Trainer.state.epoch`` as a history key: a whole number as an int, a fraction to 4 decimals."""
    epoch = round(float(epoch), 4)
    return int(epoch) if epoch.is_integer() else epoch


def finished_runs(folder: str | Path) -> dict[Path, RunResults]:
    """Every finished run under ``folder`` (a ``results.json`` at any depth), by run folder, in path
    order. A ``results.json`` that cannot be read is left out with a warning."""
    runs = {}
    for path in sorted(Path(folder).glob(f"**/{RESULTS_FILE}")):
        try:
            runs[path.parent] = RunResults.load(path)
        except DataError as error:
            warnings.warn(f"left out: {error}", stacklevel=2)
    return runs
