"""The sweep's files, rebuilt from every finished run under ``OUT/runs``: ``runs.csv`` and
``correlation.csv`` (the numbers of :mod:`~hf_gazecons.sweep.tables`), ``curves_<backbone>.png``,
``final_vs_lambda.png`` and ``summary.md`` (with the sanity check's table once ``--sanity`` has run).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..formatting import fmt_exact, fmt_mean_std
from ..run_record import CONSISTENCY, metric_key, reference_metric, variant_metric
from .config import SweepConfig, explicit_command, format_lambda
from .files import write_csv
from .plan import safe_name
from .sanity import sanity_section
from .tables import RUNS_COLUMNS, collect_rows, correlation_rows, final_rows

__all__ = ["write_outputs"]


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
        for backbone in dict.fromkeys(r["backbone"] for r in rows):
            path = out / f"curves_{safe_name(backbone)}.png"
            plot_sweep_curves([r for r in rows if r["backbone"] == backbone], path, title=backbone)
            pictures.append(path)
        pictures.append(plot_sweep_finals(finals, out / "final_vs_lambda.png"))
    n_runs = len({(r["backbone"], r["lambda"], r["seed"]) for r in rows})
    lines = [
        "# Gaze-consistency sweep",
        "",
        f"{n_runs} finished runs under `{out / 'runs'}` (mean ± sample std over seeds; final = last epoch's "
        "evaluation).",
        "",
        *(_command_section(config, invoked_as) if config is not None else []),
        *_final_section(finals),
        *_correlation_section(correlation),
        *_sanity_and_pictures(out, pictures),
    ]
    outputs["summary"] = out / "summary.md"
    outputs["summary"].write_text("\n".join(lines) + "\n")
    for i, path in enumerate(pictures):
        outputs[f"picture_{i}"] = path
    return outputs


def _command_section(config: SweepConfig, invoked_as: Sequence[str] | None) -> list[str]:
    """The command that reproduces the sweep, how it was invoked, and its settings in a sentence."""
    lines = ["Command (all options explicit; re-running it skips finished runs):", "", "```"]
    lines += [explicit_command(config), "```", ""]
    if invoked_as is not None:
        lines += ["Invoked as: `" + shlex.join(["hf-gazecons", "sweep", *invoked_as]) + "`", ""]
    lines += [
        f"Data `{config.dataset}`, {config.epochs} epochs, T0 {config.t0}, T1 {config.t1}, "
        f"lr {fmt_exact(config.learning_rate)}, batch {config.batch_size}, "
        f"image size {config.image_size or 'model default'}, "
        f"target layer {config.target_layer or 'default'}, variant {config.variant}, "
        f"per-sample Grad-CAM gradients {config.per_sample}.",
        "",
    ]
    return lines


def _final_section(finals: Sequence[Mapping[str, Any]]) -> list[str]:
    """The last epoch's metrics per backbone and lambda, mean ± sd over seeds."""
    columns = [  # header, runs.csv column, digits
        ("accuracy", "accuracy", 3), ("kappa", "kappa", 3), ("L_CAM", CONSISTENCY, 4),
        ("robust L_CAM", variant_metric("robust"), 3), ("pearson L_CAM", variant_metric("pearson"), 3),
        ("all-zero maps", "zero_map_share", 3),
    ]  # fmt: skip
    located = any(f.get("energy_pointing_game_mean") is not None for f in finals)
    if located:
        from ..localization import DEFAULT_TOLERANCE  # the training's evaluation uses the default tolerance

        games = (("energy_pointing_game", "energy pointing game"), ("pointing_game", "pointing game"))
        for game, name in games:
            tolerance = f" ({DEFAULT_TOLERANCE:g} px)" if game == "pointing_game" else ""
            columns += [(name + tolerance, game, 3), (f"{name}: chance", reference_metric("chance", game), 3)]
            columns += [(f"{name}: perfect map", reference_metric("perfect", game), 3)]
    if any(f.get(metric_key("test", "accuracy") + "_mean") is not None for f in finals):
        columns += [("test accuracy", metric_key("test", "accuracy"), 3)]
        columns += [("test L_CAM", metric_key("test", CONSISTENCY), 4)]
    head = ["backbone", "lambda", "seeds", *(name for name, _, _ in columns)]
    lines = [
        "## Final evaluation",
        "",
        "Validation split. L_CAM is the paper variant's, robust and pearson L_CAM those variants' "
        "(docs/OBJECTIVES.md); all-zero maps are the share of correct validation samples whose Grad-CAM map is "
        "zero everywhere."
        + (
            " The pointing games count the correct samples with an object and a map that is not all zero; chance is "
            "a uniform map (energy) or a peak placed at random (pointing), the perfect map the object's mask "
            "averaged onto the map's own grid (docs/METHOD.md, section 10)."
            if located
            else ""
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for f in finals:
        cells = [f"`{f['backbone']}`", format_lambda(f["lambda"]), str(f["n_seeds"])]
        cells += [fmt_mean_std(f[f"{column}_mean"], f[f"{column}_std"], digits) for _, column, digits in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _correlation_section(correlation: Sequence[Mapping[str, Any]]) -> list[str]:
    """Pearson r between kappa and L_CAM over epochs, mean ± sd over seeds (the study's Table 2)."""
    lines = ["", "## Pearson r between kappa and L_CAM over epochs (the study's Table 2 statistic)", ""]
    lines += ["| backbone | lambda | r (mean ± std over seeds) | seeds |", "|---|---|---|---|"]
    for c in correlation:
        lines.append(
            f"| `{c['backbone']}` | {format_lambda(c['lambda'])} | "
            f"{fmt_mean_std(c['pearson_r_mean'], c['pearson_r_std'])} | {c['n_seeds']} |"
        )
    return lines


def _sanity_and_pictures(out: Path, pictures: Sequence[Path]) -> list[str]:
    """The sanity check's table (once it has run), the pictures, and what the other files hold."""
    lines = []
    section = sanity_section(out)
    if section:
        lines += ["", *section]
    if pictures:
        lines += ["", "## Pictures", ""]
        lines += [f"![{p.stem}]({p.name})" for p in pictures]
    lines += ["", "Files: `runs.csv` (per run and epoch), `correlation.csv`, `sweep.json` (every invocation)."]
    return lines
