"""The report of outputs that hold several runs: the demo (three trainings side by side) and a sweep
(backbones x lambda x seeds: curves, finals against lambda, class means per lambda, planted images)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..class_maps import load_class_maps
from ..filenames import CLASS_MAPS_FILE, RESULTS_FILE
from ..formatting import fmt_mean_std, fmt_metric
from ..planted_ranking import planted_runs, planted_table
from ..run_record import RunResults, finished_runs, metric_key
from .figures import figure_uri, file_uri
from .run import LOCALISATION, SUMMARY, run_section

__all__ = ["demo_context", "sweep_context"]

_COMPARED = tuple({**SUMMARY, **LOCALISATION}.items())


def demo_context(directory: Path) -> dict[str, Any]:
    """The demo: its comparison table and picture, then one section per run."""
    comparison = json.loads((directory / "comparison.json").read_text())
    names = [name for name in comparison if (directory / name / RESULTS_FILE).is_file()]
    rows = [
        (label, [fmt_metric(comparison[name].get(metric_key("eval", key))) for name in names])
        for key, label in _COMPARED
        if any(comparison[name].get(metric_key("eval", key)) is not None for name in names)
    ]
    group = {
        "header": ["", *names],
        "rows": [[label, *values] for label, values in rows],
        "pictures": [(caption, uri) for caption, uri in [_picture(directory, "class_means_comparison.png")] if uri],
        "links": [],
        "planted": None,
    }
    sections = [run_section(directory / name, "train", anchor=f"run-{name}", title=name) for name in names]
    return {"title": "hf-gazecons demo", "kind": "demo", "group": group, "sections": sections}


def sweep_context(directory: Path) -> dict[str, Any]:
    """A sweep: the finals per backbone and lambda, the pictures the sweep drew, the class means per
    lambda (mean over seeds), the planted images found per run (where the data has them), and
    links to each run's own report."""
    from ..sweep import collect_rows, final_rows

    finals = final_rows(collect_rows(directory))
    runs = finished_runs(directory / "runs")
    compared = [(key, label) for key, label in _COMPARED if f"{key}_mean" in (finals[0] if finals else {})]
    header = ["backbone", "lambda", "seeds", *(label for _, label in compared)]
    rows = [
        [f["backbone"], f"{f['lambda']:g}", str(f["n_seeds"])]
        + [fmt_mean_std(f.get(f"{key}_mean"), f.get(f"{key}_std"), 4) for key, _ in compared]
        for f in finals
    ]
    pictures = [_picture(directory, p.name) for p in sorted(directory.glob("curves_*.png"))]
    pictures.append(_picture(directory, "final_vs_lambda.png"))
    means = _class_means_per_lambda(runs)
    if means is not None:
        pictures.append(("Class-mean Grad-CAM per backbone and lambda (mean over seeds)", means))
    group = {
        "header": header,
        "rows": rows,
        "pictures": [(caption, uri) for caption, uri in pictures if uri],
        "links": [(str(run.relative_to(directory)), f"{run.relative_to(directory)}/report.html") for run in runs],
        "planted": planted_table(planted_runs(runs)),
    }
    return {"title": f"hf-gazecons sweep: {directory.name}", "kind": "sweep", "group": group, "sections": []}


def _picture(directory: Path, name: str) -> tuple[str, str | None]:
    captions = {
        "final_vs_lambda.png": "Final evaluation against lambda_max (error bars: std over seeds)",
        "class_means_comparison.png": "Class-mean Grad-CAM of each run",
    }
    caption = captions.get(name, f"Learning curves: {name.removeprefix('curves_').removesuffix('.png')}")
    return caption, file_uri(directory / name)


def _class_means_per_lambda(runs: Mapping[Path, RunResults]) -> str | None:
    """One row of class-mean maps per (backbone, lambda), the mean over its seeds' final maps."""
    from ..plots import class_means_figure

    grouped: dict[str, list[torch.Tensor]] = {}
    names: list[str] | None = None
    for run, results in runs.items():
        if not (run / CLASS_MAPS_FILE).is_file():
            continue
        config = results.config
        maps = load_class_maps(run / CLASS_MAPS_FILE)
        if names is None:
            names = maps.label_names
        if maps.label_names == names:
            grouped.setdefault(f"{config.model} λ={config.lambda_max:g}", []).append(maps.maps)
    if not grouped or names is None:
        return None
    rows = {key: torch.stack(maps).nanmean(dim=0) for key, maps in grouped.items()}
    return figure_uri(class_means_figure(rows, names, "Class-mean Grad-CAM per lambda (mean over seeds)"))
