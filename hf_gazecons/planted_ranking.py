"""Does the per-image table find the planted images? Recall among the top k of a ranking.

A data set with a ``planted`` column (``builtin:shapes?planted=0.05``) marks ``k`` images whose
object sits away from its class's usual place. Rank every row of the per-image table by a score,
highest first (ties: earlier rows first; rows without a value last), and count the planted rows
among the first ``k``: ``recall@k = |planted ∩ top k| / k``. The deviation from the class map
(least consistent first) is compared with the loss (highest cross-entropy first), the baseline
that a per-image consistency score has to beat. Chance is ``k / n``.

>>> planted_recall(table, "deviation_paper"), planted_recall(table, "cross_entropy")
(0.9, 0.35)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["RANKINGS", "planted_recall", "planted_summary"]

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
