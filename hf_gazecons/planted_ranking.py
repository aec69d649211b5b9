"""Does the per-image table find the planted images? Recall among the top k of a ranking.

A data set with a ``planted`` column (``builtin:shapes?planted=0.05``) marks ``k`` images whose
object sits away from its class's usual place. Rank every row of the per-image table by a score,
highest first (ties: earlier rows first; rows without a value last), and count the planted rows
among the first ``k``: ``recall@k = |planted ∩ top k| / k``. The deviation from the class map
(least consistent first) is compared with the loss (highest cross-entropy first), the baseline
that a per-image consistency score has to beat. Chance is ``k / n`` (docs/METHOD.md, section 14).

>>> planted_recall(table, "deviation_paper"), planted_recall(table, "cross_entropy")
(0.9, 0.35)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .formatting import fmt_mean_std, fmt_metric
from .stats import mean_std

if TYPE_CHECKING:
    from .run_record import RunResults

__all__ = ["RANKINGS", "planted_recall", "planted_runs", "planted_summary", "planted_table"]

RANKINGS = {
    "deviation_paper": "deviation from the class map (paper)",
    "deviation_robust": "deviation from the class map (robust)",
    "cross_entropy": "cross-entropy (loss baseline)",
}
"""The scores a planted-image table compares: column -> what it is."""


def planted_recall(table: pa.Table, column: str) -> float | None:
    """The share of planted rows among the ``k`` highest ``column`` values (``k`` = planted rows);
    None without a ``planted`` column, a planted row, or the column."""
    if "planted" not in table.column_names or column not in table.column_names:
        return None
    planted = np.asarray(table.column("planted").to_numpy(zero_copy_only=False), dtype=bool)
    k = int(planted.sum())
    if k == 0:
        return None
    values = np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)
    scores = np.where(np.isnan(values), -np.inf, values)
    top = np.argsort(-scores, kind="stable")[:k]
    return float(planted[top].sum() / k)


def planted_summary(table: pa.Table) -> dict[str, Any] | None:
    """``{"n", "k", "chance", "recall": {column: recall@k}}`` of a table with planted rows, else None."""
    if "planted" not in table.column_names:
        return None
    k = int(np.asarray(table.column("planted").to_numpy(zero_copy_only=False), dtype=bool).sum())
    if k == 0:
        return None
    recall = {column: planted_recall(table, column) for column in RANKINGS if column in table.column_names}
    return {"n": table.num_rows, "k": k, "chance": k / table.num_rows, "recall": recall}


def planted_runs(runs: Mapping[Path, RunResults], correct_only: bool = False) -> list[dict[str, Any]]:
    """Per training output (run folder -> its record, as :func:`~hf_gazecons.run_record.finished_runs`
    gives them) whose table marks planted images: its backbone, lambda_max, variant and seed with
    :func:`planted_summary` (``correct_only``: of the correctly classified rows alone, where a model
    is right and may still look elsewhere)."""
    import pyarrow.compute as pc

    from .samples import read_samples

    found = []
    for run, results in runs.items():
        table = read_samples(run)
        if table is not None and correct_only:
            table = table.filter(pc.field("correct"))
        summary = None if table is None else planted_summary(table)
        if summary is not None:
            config = results.config
            found.append({"backbone": config.model, "lambda": config.lambda_max, "variant": config.variant,
                          "seed": config.seed, **summary})  # fmt: skip
    return found


def planted_table(found: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The table of :func:`planted_runs` as text cells: per (backbone, lambda, variant) the mean ±
    std over seeds of recall@k of each ranking and in how many seeds the paper deviation beat the
    loss (``rows``), then each run (``run_rows``); None without planted runs."""
    if not found:
        return None
    columns = [c for c in RANKINGS if any(c in r["recall"] for r in found)]
    labels = [RANKINGS[c] for c in columns]
    groups: dict[tuple[str, float, str], list[Mapping[str, Any]]] = {}
    for row in found:
        groups.setdefault((row["backbone"], row["lambda"], row["variant"]), []).append(row)
    rows = []
    for (backbone, lam, variant), runs in groups.items():
        beats = sum(_beats_loss(r) for r in runs)
        cells = [backbone, f"{lam:g}", variant, str(len(runs)), str(sum(r["k"] for r in runs))]
        cells.append(fmt_mean_std(*mean_std(r["chance"] for r in runs)[:2]))
        cells += [fmt_mean_std(*mean_std(r["recall"].get(c) for r in runs)[:2]) for c in columns]
        rows.append([*cells, f"{beats} of {len(runs)}"])
    run_rows = [
        [r["backbone"], f"{r['lambda']:g}", r["variant"], str(r["seed"]), f"{r['k']} of {r['n']}"]
        + [fmt_metric(r["chance"], 3)]
        + [fmt_metric(r["recall"].get(c), 3) for c in columns]
        for r in found
    ]
    return {
        "header": ["backbone", "lambda", "variant", "seeds", "planted (all seeds)", "chance k/n", *labels,
                   "deviation beats the loss"],
        "rows": rows,
        "run_header": ["backbone", "lambda", "variant", "seed", "planted", "chance k/n", *labels],
        "run_rows": run_rows,
    }  # fmt: skip


def _beats_loss(row: Mapping[str, Any]) -> bool:
    deviation, loss = row["recall"].get("deviation_paper"), row["recall"].get("cross_entropy")
    return deviation is not None and loss is not None and deviation > loss
