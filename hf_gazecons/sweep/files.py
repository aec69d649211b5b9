"""The sweep's CSV tables: one writer and one reader, so every table reads the same way.

Missing values are empty cells, floats have 6 significant digits and lambdas are written as in
the run folders' names (``-100``, ``0.5``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import format_lambda

__all__ = ["read_csv", "write_csv"]


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """A CSV of ``rows`` with ``columns`` (a row's missing keys are empty cells)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) if c != "lambda" else format_lambda(row[c]) for c in columns])
    return path


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV written by :func:`write_csv`: numbers as floats, empty cells as None."""
    with open(path, newline="") as handle:
        return [{key: _value(text) for key, text in row.items()} for row in csv.DictReader(handle)]


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.6e}"
    return value


def _value(text: str) -> Any:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text
