"""The sweep's numbers, from every finished run under ``OUT/runs`` (no plotting, no torch):

* :func:`collect_rows` - ``runs.csv``, one row per run and epoch (:data:`RUNS_COLUMNS`);
* :func:`final_rows` - per backbone and lambda, the last epoch's metrics, mean ± sample sd over seeds;
* :func:`correlation_rows` - per backbone and lambda, Pearson r(kappa, L_CAM) over epochs for each
  seed, with mean/std over seeds (the study's Table 2 statistic).

The sweep's summary, its pictures and the tables of docs/RESULTS.md (scripts/results_tables.py) all
read them from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..run_record import CONSISTENCY, finished_runs, history_key, metric_key, reference_metric, variant_metric
from ..stats import mean_std, pearson_r
from ..variants import DEFAULT_VARIANT, KEEPS_MAPS, VARIANTS

__all__ = ["FINAL_METRICS", "RUNS_COLUMNS", "collect_rows", "correlation_rows", "final_rows", "seed_groups"]

_OTHER_VARIANTS = tuple(variant_metric(v) for v in VARIANTS if v != DEFAULT_VARIANT and v not in KEEPS_MAPS)
_LOCALIZATION = tuple(
    name
    for game in ("energy_pointing_game", "pointing_game")
    for name in (game, reference_metric("chance", game), reference_metric("perfect", game))
)  # each game beside its references (docs/METHOD.md, section 10)
_HISTORY_COLUMNS = {  # runs.csv column: its key in a results.json history row
    **{name: metric_key("eval", name) for name in ("accuracy", "kappa", CONSISTENCY)},
    "eval_loss": metric_key("eval", "loss"),
    "train_loss": history_key("loss"),
    "penalty": history_key("penalty"),
    "lambda_t": history_key("lambda"),
    **{name: metric_key("eval", name) for name in (*_LOCALIZATION, "zero_map_share")},
    **{name: metric_key("eval", name) for name in _OTHER_VARIANTS},
    "train_zero_map_share": history_key("zero_map_share"),
}
_TEST_METRICS = ("accuracy", "kappa", CONSISTENCY, "zero_map_share")

RUNS_COLUMNS = (
    "backbone", "lambda", "seed", "epoch", *_HISTORY_COLUMNS, *(metric_key("test", name) for name in _TEST_METRICS)
)  # fmt: skip
"""Columns of ``runs.csv`` (``lambda`` is lambda_max, ``lambda_t`` the epoch's curriculum value).
``gaze_consistency`` is the paper variant's L_CAM, ``<variant>_gaze_consistency`` that of each other
variant the metric computes from sums (``pearson``, ``robust``),
``zero_map_share`` the all-zero maps among the correct validation samples and
``train_zero_map_share`` among the penalised training samples; each localisation game comes with
its ``chance_`` and ``perfect_`` values (empty in runs scored before they existed). The ``test_*`` columns hold the
final model's scores on the data set's test split, on each run's last row only."""

FINAL_METRICS = (
    "accuracy", "kappa", CONSISTENCY, *_OTHER_VARIANTS, "zero_map_share", *_LOCALIZATION,
    *(metric_key("test", name) for name in _TEST_METRICS),
)  # fmt: skip
"""The ``runs.csv`` columns whose last-epoch mean and std :func:`final_rows` gives (``<column>_mean``, ``_std``)."""


def collect_rows(out: str | Path, backbone_order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per finished run under ``OUT/runs`` and epoch (:data:`RUNS_COLUMNS`)."""
    rows = []
    for results in finished_runs(Path(out) / "runs").values():
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
                    row[metric_key("test", name)] = results.metric(name, "test")
            rows.append(row)
    order = {name: i for i, name in enumerate(backbone_order)}
    rows.sort(key=lambda r: (order.get(r["backbone"], len(order)), r["backbone"], r["lambda"], r["seed"], r["epoch"]))
    return rows


def seed_groups(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, float], dict[int, list[Mapping[str, Any]]]]:
    """(backbone, lambda) -> seed -> that run's rows in epoch order (insertion order kept)."""
    groups: dict[tuple[str, float], dict[int, list[Mapping[str, Any]]]] = {}
    for row in rows:
        groups.setdefault((row["backbone"], float(row["lambda"])), {}).setdefault(int(row["seed"]), []).append(row)
    for by_seed in groups.values():
        for seed_rows in by_seed.values():
            seed_rows.sort(key=lambda r: r["epoch"])
    return groups


def final_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (backbone, lambda) of ``runs.csv`` rows: each seed's last epoch, and over the seeds the
    mean and sample sd (None for one seed) of every :data:`FINAL_METRICS` column, the number of seeds
    and the last epoch."""
    table = []
    for (backbone, lam), by_seed in seed_groups(rows).items():
        last = [seed_rows[-1] for seed_rows in by_seed.values()]
        row: dict[str, Any] = {
            "backbone": backbone,
            "lambda": lam,
            "n_seeds": len(last),
            "epochs": max(r["epoch"] for r in last),
        }
        for metric in FINAL_METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"], _ = mean_std(r.get(metric) for r in last)
        table.append(row)
    return table


def correlation_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Per (backbone, lambda): Pearson r(kappa, L_CAM) over epochs for each seed, and mean/std over seeds.

    Returns the rows and the seeds that have a column (``r_seed_<n>``). A seed whose r is undefined
    (fewer than 3 epochs with both values, or a constant series) is left empty and not counted.
    """
    groups = seed_groups(rows)
    seeds = sorted({seed for by_seed in groups.values() for seed in by_seed})
    table = []
    for (backbone, lam), by_seed in groups.items():
        row: dict[str, Any] = {"backbone": backbone, "lambda": lam}
        values = []
        for seed in seeds:
            r = None
            if seed in by_seed:
                r = pearson_r([x["kappa"] for x in by_seed[seed]], [x[CONSISTENCY] for x in by_seed[seed]])
            row[f"r_seed_{seed}"] = r
            values.append(r)
        row["pearson_r_mean"], row["pearson_r_std"], row["n_seeds"] = mean_std(values)
        table.append(row)
    return table, seeds
