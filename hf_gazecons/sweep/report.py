"""The sweep's tables and pictures, rebuilt from every finished run under ``OUT/runs``:

* ``runs.csv`` - one row per run and epoch (:data:`RUNS_COLUMNS`);
* ``correlation.csv`` - per backbone and lambda, Pearson r(kappa, L_CAM) over epochs for each seed,
  with mean/std over seeds (the study's Table 2 statistic);
* ``curves_<backbone>.png``, ``final_vs_lambda.png`` and ``summary.md`` (with the sanity check's
  table once ``--sanity`` has run).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..filenames import RESULTS_FILE
from ..formatting import fmt_mean_std
from ..run_record import RunResults, metric_key
from ..stats import mean_std, pearson_r
from .config import SweepConfig, explicit_command, format_lambda
from .files import write_csv
from .plan import RUNS_DIR, safe_name
from .sanity import sanity_section

__all__ = ["RUNS_COLUMNS", "collect_rows", "correlation_rows", "final_rows", "write_outputs"]

RUNS_COLUMNS = (
    "backbone",
    "lambda",
    "seed",
    "epoch",
    "accuracy",
    "kappa",
    "gaze_consistency",
    "eval_loss",
    "train_loss",
    "penalty",
    "lambda_t",
    "energy_pointing_game",
    "pointing_game",
    "zero_map_share",
    "robust_gaze_consistency",
    "pearson_gaze_consistency",
    "train_zero_map_share",
    "test_accuracy",
    "test_kappa",
    "test_gaze_consistency",
    "test_zero_map_share",
)
"""Columns of ``runs.csv`` (``lambda`` is lambda_max, ``lambda_t`` the epoch's curriculum value).
``gaze_consistency`` is the paper variant's L_CAM, ``robust_gaze_consistency`` and
``pearson_gaze_consistency`` those of the robust and pearson variants,
``zero_map_share`` the all-zero maps among the correct validation samples and
``train_zero_map_share`` among the penalised training samples. The ``test_*`` columns hold the
final model's scores on the data set's test split, on each run's last row only."""

_EVAL_COLUMNS = (
    "accuracy", "kappa", "gaze_consistency", "energy_pointing_game", "pointing_game", "zero_map_share",
    "robust_gaze_consistency", "pearson_gaze_consistency",
)  # fmt: skip
_HISTORY_COLUMNS = {
    **{column: metric_key("eval", column) for column in _EVAL_COLUMNS},
    "eval_loss": metric_key("eval", "loss"),
    "train_loss": "train_loss",
    "penalty": "train_penalty",
    "lambda_t": "lambda",
    "train_zero_map_share": "train_zero_map_share",
}
_TEST_METRICS = ("accuracy", "kappa", "gaze_consistency", "zero_map_share")


def _read_results(out: Path) -> list[RunResults]:
    found = []
    for path in sorted((out / RUNS_DIR).glob(f"**/{RESULTS_FILE}")):
        try:
            found.append(RunResults.load(path))
        except DataError:
            continue
    return found


def collect_rows(out: str | Path, backbone_order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per finished run and epoch (:data:`RUNS_COLUMNS`), from every ``results.json``."""
    rows = []
    for results in _read_results(Path(out)):
        config = results.config
        for entry in results.history:
            row: dict[str, Any] = {
                "backbone": config.model,
                "lambda": float(config.lambda_max),
                "seed": int(config.seed),
                "epoch": entry["epoch"],
            }
            for column, key in _HISTORY_COLUMNS.items():
                row[column] = entry.get(key)
            if entry is results.history[-1]:
                for name in _TEST_METRICS:
                    row[f"test_{name}"] = results.metric(name, "test")
            rows.append(row)
    order = {name: i for i, name in enumerate(backbone_order)}
    rows.sort(key=lambda r: (order.get(r["backbone"], len(order)), r["backbone"], r["lambda"], r["seed"], r["epoch"]))
    return rows


def _groups(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, float], dict[int, list[Mapping[str, Any]]]]:
    """(backbone, lambda) -> seed -> that run's rows in epoch order (insertion order kept)."""
    groups: dict[tuple[str, float], dict[int, list[Mapping[str, Any]]]] = {}
    for row in rows:
        groups.setdefault((row["backbone"], float(row["lambda"])), {}).setdefault(int(row["seed"]), []).append(row)
    for by_seed in groups.values():
        for seed_rows in by_seed.values():
            seed_rows.sort(key=lambda r: r["epoch"])
    return groups


def correlation_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Per (backbone, lambda): Pearson r(kappa, L_CAM) over epochs for each seed, and mean/std over seeds.

    Returns the rows and the seeds that have a column (``r_seed_<n>``). A seed whose r is undefined
    (fewer than 3 epochs with both values, or a constant series) is left empty and not counted.
    """

    groups = _groups(rows)
    seeds = sorted({seed for by_seed in groups.values() for seed in by_seed})
    table = []
    for (backbone, lam), by_seed in groups.items():
        row: dict[str, Any] = {"backbone": backbone, "lambda": lam}
        values = []
        for seed in seeds:
            r = None
            if seed in by_seed:
                r = pearson_r([x["kappa"] for x in by_seed[seed]], [x["gaze_consistency"] for x in by_seed[seed]])
            row[f"r_seed_{seed}"] = r
            values.append(r)
        row["pearson_r_mean"], row["pearson_r_std"], row["n_seeds"] = mean_std(values)
        table.append(row)
    return table, seeds


_FINAL_METRICS = (
    "accuracy",
    "kappa",
    "gaze_consistency",
    "robust_gaze_consistency",
    "pearson_gaze_consistency",
    "zero_map_share",
    "energy_pointing_game",
    "pointing_game",
    *(f"test_{name}" for name in _TEST_METRICS),
)


def final_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (backbone, lambda): the last epoch's metrics, mean/std over seeds."""
    table = []
    for (backbone, lam), by_seed in _groups(rows).items():
        last = [seed_rows[-1] for seed_rows in by_seed.values()]
        row: dict[str, Any] = {
            "backbone": backbone,
            "lambda": lam,
            "n_seeds": len(last),
            "epochs": max(r["epoch"] for r in last),
        }
        for metric in _FINAL_METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"], _ = mean_std(r.get(metric) for r in last)
        table.append(row)
    return table


def write_outputs(
    out: str | Path, config: SweepConfig | None = None, invoked_as: Sequence[str] | None = None
) -> dict[str, Path]:
    """Regenerate ``runs.csv``, ``correlation.csv``, the pictures and ``summary.md`` from ``OUT/runs``."""
    from ..plots import plot_sweep_curves, plot_sweep_finals

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect_rows(out, config.backbones if config else ())
    outputs = {"runs": write_csv(out / "runs.csv", RUNS_COLUMNS, rows)}
    correlation, seeds = correlation_rows(rows)
    columns = ["backbone", "lambda", *[f"r_seed_{s}" for s in seeds], "pearson_r_mean", "pearson_r_std", "n_seeds"]
    outputs["correlation"] = write_csv(out / "correlation.csv", columns, correlation)
    finals = final_rows(rows)
    pictures: list[Path] = []
    if rows:
        backbones = list(dict.fromkeys(r["backbone"] for r in rows))
        for backbone in backbones:
            path = out / f"curves_{safe_name(backbone)}.png"
            plot_sweep_curves([r for r in rows if r["backbone"] == backbone], path, title=backbone)
            pictures.append(path)
        pictures.append(plot_sweep_finals(rows, out / "final_vs_lambda.png"))
    summary = _summary(out, config, invoked_as, rows, finals, correlation, pictures)
    outputs["summary"] = out / "summary.md"
    outputs["summary"].write_text(summary)
    for i, path in enumerate(pictures):
        outputs[f"picture_{i}"] = path
    return outputs


def _summary(
    out: Path,
    config: SweepConfig | None,
    invoked_as: Sequence[str] | None,
    rows: Sequence[Mapping[str, Any]],
    finals: Sequence[Mapping[str, Any]],
    correlation: Sequence[Mapping[str, Any]],
    pictures: Sequence[Path],
) -> str:
    n_runs = len({(r["backbone"], r["lambda"], r["seed"]) for r in rows})
    lines = ["# Gaze-consistency sweep", ""]
    lines += [
        (
            f"{n_runs} finished runs under `{out / 'runs'}` (mean ± sample std over seeds; "
            "final = last epoch's evaluation)."
        ),
        "",
    ]
    if config is not None:
        lines += [
            "Command (all options explicit; re-running it skips finished runs):",
            "",
            "```",
            explicit_command(config),
            "```",
            "",
        ]
        if invoked_as is not None:
            lines += ["Invoked as: `" + shlex.join(["hf-gazecons", "sweep", *invoked_as]) + "`", ""]
        lines += [
            (
                f"Data `{config.dataset}`, {config.epochs} epochs, T0 {config.t0}, T1 {config.t1}, "
                f"lr {config.learning_rate:g}, batch {config.batch_size}, "
                f"image size {config.image_size or 'model default'}, "
                f"target layer {config.target_layer or 'default'}, variant {config.variant}."
            ),
            "",
        ]
    has_masks = any(f.get("energy_pointing_game_mean") is not None for f in finals)
    has_test = any(f.get("test_accuracy_mean") is not None for f in finals)
    lines += ["## Final evaluation", ""]
    lines += [
        "Validation split. L_CAM is the paper variant's, robust and pearson L_CAM those variants' "
        "(docs/OBJECTIVES.md); all-zero maps are the share of correct validation samples whose Grad-CAM map is "
        "zero everywhere.",
        "",
    ]
    head = ["backbone", "lambda", "seeds", "accuracy", "kappa", "L_CAM", "robust L_CAM", "pearson L_CAM"]
    head += ["all-zero maps"]
    if has_masks:
        head += ["energy pointing game", "pointing game"]
    if has_test:
        head += ["test accuracy", "test L_CAM"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in finals:
        cells = [
            f"`{f['backbone']}`",
            format_lambda(f["lambda"]),
            str(f["n_seeds"]),
            fmt_mean_std(f["accuracy_mean"], f["accuracy_std"]),
            fmt_mean_std(f["kappa_mean"], f["kappa_std"]),
            fmt_mean_std(f["gaze_consistency_mean"], f["gaze_consistency_std"], 4),
            fmt_mean_std(f["robust_gaze_consistency_mean"], f["robust_gaze_consistency_std"]),
            fmt_mean_std(f["pearson_gaze_consistency_mean"], f["pearson_gaze_consistency_std"]),
            fmt_mean_std(f["zero_map_share_mean"], f["zero_map_share_std"]),
        ]
        if has_masks:
            cells += [
                fmt_mean_std(f["energy_pointing_game_mean"], f["energy_pointing_game_std"]),
                fmt_mean_std(f["pointing_game_mean"], f["pointing_game_std"]),
            ]
        if has_test:
            cells += [
                fmt_mean_std(f["test_accuracy_mean"], f["test_accuracy_std"]),
                fmt_mean_std(f["test_gaze_consistency_mean"], f["test_gaze_consistency_std"], 4),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Pearson r between kappa and L_CAM over epochs (the study's Table 2 statistic)", ""]
    lines += ["| backbone | lambda | r (mean ± std over seeds) | seeds |", "|---|---|---|---|"]
    for c in correlation:
        lines.append(
            f"| `{c['backbone']}` | {format_lambda(c['lambda'])} | "
            f"{fmt_mean_std(c['pearson_r_mean'], c['pearson_r_std'])} | {c['n_seeds']} |"
        )
    section = sanity_section(out)
    if section:
        lines += ["", *section]
    if pictures:
        lines += ["", "## Pictures", ""]
        lines += [f"![{p.stem}]({p.name})" for p in pictures]
    lines += ["", "Files: `runs.csv` (per run and epoch), `correlation.csv`, `sweep.json` (every invocation)."]
    return "\n".join(lines) + "\n"
