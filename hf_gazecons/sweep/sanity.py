"""The sanity check on a whole sweep: cascading randomisation of every finished run's model.

:func:`sanity_sweep` runs :func:`hf_gazecons.sanity.cascading_randomization` on each run under
``OUT/runs`` (its evaluation split, the Grad-CAM layer it trained with) and writes
``OUT/sanity.csv`` (per run and step) and ``OUT/sanity_summary.csv`` (per backbone, lambda and
step, over runs); :func:`sanity_section` turns the latter into the summary's table.

    hf-gazecons sweep ... --sanity                  # after the sweep
    hf-gazecons sweep --collect --sanity --output-dir OUT
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..filenames import RESULTS_FILE
from ..formatting import fmt_mean_std, fmt_metric
from ..run_record import CONSISTENCY, finished_runs
from ..stats import mean_std
from .config import format_lambda
from .files import read_csv, write_csv
from .plan import RUNS_DIR

__all__ = ["SANITY_COLUMNS", "SUMMARY_COLUMNS", "sanity_section", "sanity_sweep"]

SANITY_FILE, SANITY_SUMMARY_FILE = "sanity.csv", "sanity_summary.csv"
_RUN_METRICS = ("accuracy", CONSISTENCY, "energy_pointing_game", "pointing_game")  # each run's, beside its steps

SANITY_COLUMNS = (
    "backbone", "lambda", "seed", "step", "randomized_up_to", "spearman_mean", "spearman_std", "n_samples",
    "n_undefined", "n_constant_original", "n_constant_randomized", *_RUN_METRICS,
)  # fmt: skip

SUMMARY_COLUMNS = (
    "backbone", "lambda", "step", "randomized_up_to", "spearman_mean", "spearman_std", "n_runs",
    "constant_original", "constant_randomized",
)  # fmt: skip
"""``sanity_summary.csv``: Spearman mean/std over runs; ``constant_*``: mean share of constant maps."""


def sanity_sweep(
    output_dir: str | Path,
    max_samples: int = 64,
    target: str | int | None = None,
    seed: int = 0,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Check every finished run under ``OUT/runs`` (first ``max_samples`` images of its evaluation
    split; the Grad-CAM layer the run trained with unless ``target`` is given) and write the two
    CSVs; returns the path of ``sanity.csv``.

    Raises:
        DataError: there is no finished run under ``OUT/runs``.
    """
    from ..sanity import cascading_randomization
    from ..saved_run import SavedRun

    echo = echo or (lambda line: print(line, flush=True))
    out = Path(output_dir)
    directories = list(finished_runs(out / RUNS_DIR))
    if not directories:
        raise DataError(f"no finished runs ({RESULTS_FILE}) under {out / RUNS_DIR}")
    cache: dict[tuple[str, str], Any] = {}
    rows: list[dict[str, Any]] = []
    for directory in directories:
        run = SavedRun.load(directory)
        config = run.results.config
        key = (config.dataset, config.eval_split)
        if key not in cache:  # runs of one sweep share their data
            split = run.split()
            cache[key] = split.select(range(min(max_samples, len(split))))
        layer = target if target is not None else run.target
        steps = cascading_randomization(run.loaded, cache[key], target=layer, max_samples=max_samples, seed=seed)
        base = {
            "backbone": config.model, "lambda": float(config.lambda_max), "seed": int(config.seed),
            **{name: run.results.metric(name) for name in _RUN_METRICS},
        }  # fmt: skip
        rows += [{**base, **{k: v for k, v in step.items() if k != "modules"}} for step in steps]
        echo(
            f"sanity {config.model} lambda={format_lambda(config.lambda_max)} seed={config.seed}: "
            + ", ".join(f"{s['randomized_up_to']} {fmt_metric(s['spearman_mean'], 3)}" for s in steps[1:])
        )
    rows.sort(key=lambda r: (r["backbone"], r["lambda"], r["seed"], r["step"]))
    write_csv(out / SANITY_FILE, SANITY_COLUMNS, rows)
    write_csv(out / SANITY_SUMMARY_FILE, SUMMARY_COLUMNS, _summary_rows(rows))
    return out / SANITY_FILE


def _summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["backbone"], row["lambda"], row["step"], row["randomized_up_to"]), []).append(row)
    summary = []
    for (backbone, lam, step, name), members in groups.items():
        mean, std, _ = mean_std(m["spearman_mean"] for m in members)
        summary.append({
            "backbone": backbone, "lambda": lam, "step": step, "randomized_up_to": name,
            "spearman_mean": mean, "spearman_std": std, "n_runs": len(members),
            "constant_original": mean_std(m["n_constant_original"] / m["n_samples"] for m in members)[0],
            "constant_randomized": mean_std(m["n_constant_randomized"] / m["n_samples"] for m in members)[0],
        })  # fmt: skip
    return summary


def sanity_section(output_dir: str | Path) -> list[str]:
    """The summary's Markdown section on ``sanity_summary.csv``; no lines before a sanity pass."""
    path = Path(output_dir) / SANITY_SUMMARY_FILE
    if not path.is_file():
        return []
    lines = ["## Sanity check: cascading randomization (Spearman, original vs randomised map)", ""]
    lines += [
        "Mean over runs of each run's mean Spearman correlation (over its samples) between the original and the "
        "cumulatively re-initialised model's map; step 0 is the unchanged model. Constant maps (no ranking) are "
        "left out of the correlation and counted separately.",
        "",
        "| backbone | lambda | randomized up to | Spearman (mean ± std over runs) | runs | "
        "constant maps (original / randomised) |",
        "|---|---|---|---|---|---|",
    ]
    for r in read_csv(path):
        constant = " / ".join(
            "n/a" if r[k] is None else f"{r[k]:.0%}" for k in ("constant_original", "constant_randomized")
        )
        lines.append(
            f"| `{r['backbone']}` | {format_lambda(r['lambda'])} | {r['randomized_up_to']} | "
            f"{fmt_mean_std(r['spearman_mean'], r['spearman_std'])} | {int(r['n_runs'])} | {constant} |"
        )
    return lines
