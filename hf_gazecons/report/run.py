"""The report's section of one evaluated model: a ``score`` output or a ``train`` output's final evaluation.

Summary (localisation with its chance and ceiling where the results have them), the class-mean
grid, each class's most and least consistent images, histograms of the deviations per class, the
planted images found (where the data has them) and the per-image table.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..extremes import EXAMPLES_FILE
from ..filenames import EXAMPLES_DIR
from ..formatting import fmt_metric
from ..planted_ranking import RANKINGS, planted_summary
from ..run_record import RunResults, metric_key, variant_metric
from ..samples import read_samples
from ..variants import DEFAULT_VARIANT, VARIANTS
from .figures import deviation_histograms, file_uri

__all__ = ["MAX_TABLE_ROWS", "LOCALISATION", "SUMMARY", "evaluation_metrics", "run_section"]

MAX_TABLE_ROWS = 5000
"""Rows of the per-image table in the page; a larger table shows its least consistent rows."""

LOCALISATION = {"energy_pointing_game": "energy pointing game", "pointing_game": "pointing game"}

SUMMARY = {
    "accuracy": "accuracy",
    "kappa": "Cohen's kappa",
    **{
        variant_metric(v): f"L_CAM, {v}" + (" (lower = more consistent)" if v == DEFAULT_VARIANT else "")
        for v in sorted(VARIANTS, key=lambda v: v != DEFAULT_VARIANT)
    },
    "zero_map_share": "all-zero maps (share of correct)",
}
"""The summary's metrics (flat names, as ``to_metrics`` writes them without the prefix) and labels."""
_PICTURES = (
    ("class_means.png", "Class-mean Grad-CAM (each class's representative gaze)"),
    ("learning_curves.png", "Learning curves"),
    ("kappa_vs_consistency.png", "Cohen's kappa against L_CAM over epochs"),
)


def evaluation_metrics(directory: Path, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The flat metrics of a score or train output (``accuracy``, ``gaze_consistency``,
    ``robust_gaze_consistency``, ``energy_pointing_game`` and, where present, its ``..._chance`` and
    ``..._ceiling``) and what was evaluated (model, data, split, target layer, ...)."""
    if kind == "train":
        results = RunResults.load(directory)
        prefix = metric_key("eval", "")
        metrics = _references({k.removeprefix(prefix): v for k, v in results.final.items() if k.startswith(prefix)})
        config = results.config
        facts = {
            "model": config.model,
            "data set": f"{config.dataset} ({config.eval_split})",
            "lambda_max": f"{config.lambda_max:g} (variant {config.variant})",
            "target layer": config.target_layer,
            "seed": str(config.seed),
        }
        return metrics, {k: str(v) for k, v in facts.items() if v is not None}
    scores = json.loads((directory / "consistency.json").read_text())
    metrics = {"accuracy": scores.get("accuracy"), "kappa": scores.get("kappa")}
    metrics.update({variant_metric(v): value for v, value in (scores.get("gaze_consistency_by_variant") or {}).items()})
    metrics["zero_map_share"] = scores.get("zero_map_share")
    metrics.update(_references(_flat(scores.get("localization") or {})))
    size = "x".join(map(str, scores.get("cam_size") or []))
    facts = {
        "model": scores.get("model"),
        "data set": f"{scores.get('dataset')} ({scores.get('split')})",
        "target layer": f"{scores.get('target_layer')} (map {size}{', grid' if scores.get('grid') else ''})",
        "images": f"{scores.get('n_samples')} ({scores.get('n_correct')} correct)",
    }
    return metrics, {k: str(v) for k, v in facts.items() if v is not None}


def _references(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with each game's chance and perfect-map value (docs/METHOD.md, section 10) also
    under ``<game>_chance`` and ``<game>_ceiling``: score writes ``<game>_chance`` and
    ``<game>_perfect``, train's evaluation ``chance_<game>`` and ``perfect_<game>``."""
    found = dict(metrics)
    for game in LOCALISATION:
        for suffix, names in (("_chance", (f"chance_{game}",)), ("_ceiling", (f"{game}_perfect", f"perfect_{game}"))):
            value = next((metrics[name] for name in names if metrics.get(name) is not None), None)
            if value is not None:
                found.setdefault(f"{game}{suffix}", value)
    return found


def _flat(localization: dict[str, Any]) -> dict[str, Any]:
    """``{"energy_pointing_game": 0.4, "energy_pointing_game_chance": ...}`` from a localisation
    entry that holds values or ``{"value", "chance", "ceiling"}`` dicts."""
    flat: dict[str, Any] = {}
    for key, value in localization.items():
        if isinstance(value, dict):
            flat[key] = value.get("value")
            flat.update({f"{key}_{k}": v for k, v in value.items() if k != "value"})
        else:
            flat[key] = value
    return flat


def run_section(directory: str | Path, kind: str, anchor: str, title: str | None = None) -> dict[str, Any]:
    """The template's context of one score or train output."""
    directory = Path(directory)
    metrics, facts = evaluation_metrics(directory, kind)
    summary = [(label, fmt_metric(metrics.get(key))) for key, label in SUMMARY.items() if key in metrics]
    localisation = [
        (label, *(fmt_metric(metrics.get(f"{key}{suffix}")) for suffix in ("", "_chance", "_ceiling")))
        for key, label in LOCALISATION.items()
        if metrics.get(key) is not None
    ]
    table = read_samples(directory)
    frame = None if table is None else table.to_pandas()
    classes = [] if frame is None else sorted(frame["compared_class"].unique())
    column = "deviation_paper"
    return {
        "anchor": anchor,
        "title": title or f"{facts.get('model', directory.name)} on {facts.get('data set', '')}",
        "kind": kind,
        "facts": list(facts.items()),
        "summary": summary,
        "localisation": localisation,
        "has_chance": any(row[2] != "n/a" or row[3] != "n/a" for row in localisation),
        "pictures": [(caption, uri) for name, caption in _PICTURES if (uri := file_uri(directory / name))],
        "examples": _examples(directory),
        "histogram": None if frame is None else deviation_histograms(frame, column, classes),
        "planted": _planted(table),
        "table": None if table is None else _table(table, column),
    }


def _examples(directory: Path) -> list[dict[str, Any]]:
    """Per class: ``{"name", "most": [...], "least": [...]}``, each image with its overlay's URI."""
    listing = directory / EXAMPLES_DIR / EXAMPLES_FILE
    if not listing.is_file():
        return []
    by_class: dict[str, dict[str, Any]] = {}
    for row in json.loads(listing.read_text()):
        entry = by_class.setdefault(row["class"], {"name": row["class"], "most": [], "least": []})
        entry[row["kind"]].append({**row, "uri": file_uri(directory / EXAMPLES_DIR / row["file"])})
    return list(by_class.values())


def _planted(table: pa.Table | None) -> dict[str, Any] | None:
    summary = None if table is None else planted_summary(table)
    if summary is None:
        return None
    rows = [(RANKINGS[column], fmt_metric(value, 3)) for column, value in summary["recall"].items()]
    return {"n": summary["n"], "k": summary["k"], "chance": fmt_metric(summary["chance"], 3), "rows": rows}


def _table(table: pa.Table, column: str) -> dict[str, Any]:
    """Header and cells (text, sort key) of the per-image table; the least consistent
    :data:`MAX_TABLE_ROWS` rows when there are more."""
    frame = table.to_pandas()
    note = None
    if len(frame) > MAX_TABLE_ROWS and column in frame:
        frame = frame.sort_values(column, ascending=False, na_position="last").head(MAX_TABLE_ROWS).sort_index()
        note = f"the {MAX_TABLE_ROWS:,} least consistent of {table.num_rows:,} rows (all of them: the samples file)"
    columns = list(frame.columns)
    rows = [[_cell(value) for value in record] for record in frame.itertuples(index=False, name=None)]
    docs = {f.name: (f.metadata or {}).get(b"doc", b"").decode() for f in table.schema}
    return {"columns": [(name, docs.get(name, "")) for name in columns], "rows": rows, "note": note}


def _cell(value: Any) -> tuple[str, str]:
    """(text shown, sort key): numbers sort by value, missing values first."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, (bool, np.bool_)):
        text = "yes" if value else "no"
        return text, text
    if isinstance(value, numbers.Integral):
        return str(value), str(value)
    if isinstance(value, numbers.Real):
        return f"{value:.4f}", f"{value:.8g}"
    return str(value), str(value)
