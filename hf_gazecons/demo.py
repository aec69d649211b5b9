"""The demo: one small timm CNN fine-tuned on ``builtin:shapes`` three times: without the regulariser,
with the study's (``paper``) objective and with the one this project recommends (``pearson``, its
class map following the horizontal flip; docs/OBJECTIVES.md).

>>> runs = run_demo("gazecons-demo")   # baseline/, paper/, pearson/
>>> print(comparison_table(runs))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .cam_family import DEFAULT_CAM_METHOD, check_cam_method
from .checks import check_curriculum, check_fields
from .formatting import fmt_metric
from .run_record import class_metric, reference_metric, variant_metric
from .variants import DEFAULT_VARIANT

if TYPE_CHECKING:  # imported in run_demo: the command line reads DemoSettings without loading torch
    from .finetune import TrainingRun

__all__ = ["Arm", "DemoSettings", "demo_arms", "run_demo", "comparison_table"]


@dataclass(frozen=True)
class DemoSettings:
    """A tiny timm EfficientNet learns the shapes (accuracy > 0.9) in 10 epochs of about ten seconds
    each on 2 CPU cores; the regularised runs use the curriculum (0 up to epoch ``t0``, full from
    epoch ``t1``): ``lambda_max`` is the paper run's, ``pearson_lambda_max`` the pearson run's (its
    deviation lies in [0, 1], about three times the paper variant's values here). ``cam_method`` is the
    maps' method, of the penalty and of the evaluations."""

    model: str = "test_efficientnet"
    dataset: str = "builtin:shapes?size=128"
    image_size: int = 128
    epochs: int = 10
    lambda_max: float = 50.0
    pearson_lambda_max: float = 5.0
    t0: int = 2
    t1: int = 5
    learning_rate: float = 3e-3
    batch_size: int = 32
    seed: int = 0
    cam_method: str = DEFAULT_CAM_METHOD

    def __post_init__(self) -> None:
        check_fields(self)
        check_curriculum(self.t0, self.t1)
        check_cam_method(self.cam_method, training=True)


@dataclass(frozen=True)
class Arm:
    """One run of the demo: its penalty's variant and lambda_max, and whether its class map follows
    the horizontal flip of each training image."""

    variant: str
    lambda_max: float
    follow_flips: bool = False


def demo_arms(settings: DemoSettings) -> dict[str, Arm]:
    """The demo's runs by name: no penalty, the study's objective, the recommended one."""
    return {
        "baseline": Arm("paper", 0.0),
        "paper": Arm("paper", settings.lambda_max),
        "pearson": Arm("pearson", settings.pearson_lambda_max, follow_flips=True),
    }


def run_demo(
    output_dir: str | Path, settings: DemoSettings = DemoSettings(), report: bool = True
) -> dict[str, TrainingRun]:
    """Train the runs of :func:`demo_arms` into ``output_dir``, with the same seed and data; with
    ``report``, each run's ``report.html`` and one of the three (``output_dir/report.html``)."""
    from .finetune import ModelDataArguments, train
    from .jsonio import write_json
    from .plots import plot_class_means
    from .trainer import GazeConsistencyTrainingArguments

    output_dir = Path(output_dir)
    data_args = ModelDataArguments(
        model=settings.model, dataset=settings.dataset, image_size=settings.image_size, faithfulness=True,
        report=report,
    )
    runs = {}
    for name, arm in demo_arms(settings).items():
        flips = ", class map follows flips" if arm.follow_flips else ""
        print(f"== {name}: {settings.model}, lambda_max = {arm.lambda_max:g}, variant {arm.variant}{flips}, "
              f"CAM method {settings.cam_method}, {settings.epochs} epochs")  # fmt: skip
        args = GazeConsistencyTrainingArguments(
            output_dir=str(output_dir / name),
            num_train_epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=64,
            lambda_max=arm.lambda_max,
            variant=arm.variant,
            follow_flips=arm.follow_flips,
            t0=settings.t0,
            t1=settings.t1,
            save_strategy="no",
            seed=settings.seed,
            disable_tqdm=True,
            cam_method=settings.cam_method,
        )
        runs[name] = train(data_args, args)
    label_names = runs["baseline"].results.config.label_names
    plot_class_means(
        {
            f"{name} (L_CAM {fmt_metric(run.evaluation.values[DEFAULT_VARIANT])})": run.evaluation.class_means
            for name, run in runs.items()
        },
        label_names,
        output_dir / "class_means_comparison.png",
        title=f"Class-mean maps ({settings.cam_method}) on the validation split",
    )
    write_json(output_dir / "comparison.json", {name: _recorded(run) for name, run in runs.items()})
    if report:
        from .report import write_report

        write_report(output_dir)
    return runs


def _recorded(run: TrainingRun) -> dict:
    """A run's line in comparison.json: its final evaluation's metrics (``eval_*``) and the summary of
    its maps' faithfulness (deletion/insertion beside a random and the perfect map)."""
    found = run.results.faithfulness
    return {**run.results.final, "faithfulness": found["summary"] if found else None}


def comparison_table(runs: dict[str, TrainingRun]) -> str:
    """Side by side, from each run's final evaluation (the validation split): accuracy, kappa, L_CAM
    (paper and pearson), all-zero maps, localisation beside its chance and perfect-map values (and
    per class), and the faithfulness of the maps beside a random and the perfect map."""
    first = next(iter(runs.values()))
    grid = "x".join(map(str, first.evaluation.cam_size))
    px = f"{fmt_metric(first.results.metric('pointing_game_tolerance'), 0)} px"
    rows: list[tuple[str, Callable[[TrainingRun], float | None]]] = [
        (label, _metric(name))
        for label, name in (
            ("accuracy", "accuracy"),
            ("Cohen's kappa", "kappa"),
            ("L_CAM, paper (lower = more consistent)", variant_metric("paper")),
            ("L_CAM, pearson ((1 - r) / 2)", variant_metric("pearson")),
            ("all-zero maps (share of correct)", "zero_map_share"),
            ("energy pointing game (EPG, non-zero maps)", "energy_pointing_game"),
            ("  EPG chance (a uniform map)", reference_metric("chance", "energy_pointing_game")),
            (f"  EPG of the perfect map ({grid})", reference_metric("perfect", "energy_pointing_game")),
            (f"pointing game (PG, {px}, non-zero maps)", "pointing_game"),
            ("  PG chance (a random peak)", reference_metric("chance", "pointing_game")),
            (f"  PG of the perfect map ({grid})", reference_metric("perfect", "pointing_game")),
        )
    ]
    for name in first.results.config.label_names:
        rows += [
            (f"  PG ({px}), {name}", _metric(class_metric(name, "pointing_game"))),
            (f"    chance, {name}", _metric(class_metric(name, reference_metric("chance", "pointing_game")))),
            (f"    perfect map, {name}", _metric(class_metric(name, reference_metric("perfect", "pointing_game")))),
        ]
    rows.append(("all-zero maps among those with a mask", _metric("localization_zero_map_share")))
    rows.append(("maps without a ranking (deletion/insertion)", _unranked))
    for metric, label in (("deletion_auc", "deletion AUC (lower = more faithful)"),
                          ("insertion_auc", "insertion AUC (higher = more faithful)")):  # fmt: skip
        rows += [
            (label, _faithful("gradcam", metric)),
            (f"  {label.split(' (')[0]}, random map", _faithful("random", metric)),
            (f"  {label.split(' (')[0]}, perfect map", _faithful("perfect", metric)),
        ]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{name:>10}" for name in runs)]
    for label, value in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{fmt_metric(value(run)):>10}" for run in runs.values()))
    return "\n".join(lines)


def _metric(name: str) -> Callable[[TrainingRun], float | None]:
    return lambda run: run.results.metric(name)


def _unranked(run: TrainingRun) -> float | None:
    """The share of the Grad-CAM maps that deletion and insertion could not rank (all-zero or
    constant: no AUC; the AUC rows are means over the others)."""
    found = run.results.faithfulness
    if not found:
        return None
    counts = found["summary"]["gradcam"]["deletion_auc"]
    total = counts["n"] + counts["n_undefined"]
    return counts["n_undefined"] / total if total else None


def _faithful(map_name: str, metric: str) -> Callable[[TrainingRun], float | None]:
    def value(run: TrainingRun) -> float | None:
        found = run.results.faithfulness
        return found["summary"][map_name][metric]["mean"] if found else None

    return value
