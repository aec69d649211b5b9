"""Per-class final evaluation of finished sweep runs on data with masks (docs/BRAIN.md's study table).

For every run folder under the sweep folders given (``OUT/runs/<backbone>/lambda_<v>/seed_<n>``), the
saved final model is scored once per class on that class's images of the evaluation split, with the
run's data set, target layer and preprocessing. Per class: L_CAM (paper and robust variants), the
share of all-zero maps among the correct samples, the energy pointing game, the pointing game (over
correct samples with a mask) and the accuracy. One evaluation of a class subset gives exactly that
class's L_CAM of the whole split, because a class's representative map uses that class's samples only.

python scripts/per_class_table.py out-brain/paper out-brain/robust --output out-brain/per_class.csv

Prints two markdown tables: mean ± sample sd over seeds per (variant, backbone, lambda_max, class)
(the mean alone for one seed); and each regularised setting's change against the lambda_max 0 runs
of the same backbone and class (training at lambda 0 does not depend on the variant): the
difference of the means with its 95 % interval (Welch's t over seeds, ``stats.difference_interval``),
called lower or higher only where that interval excludes 0.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from hf_gazecons.data import load_image_dataset
from hf_gazecons.formatting import fmt_metric
from hf_gazecons.metric import gaze_consistency
from hf_gazecons.models import load_model
from hf_gazecons.run_record import RunResults
from hf_gazecons.specs import parse_target
from hf_gazecons.stats import difference_interval, mean_std
from hf_gazecons.sweep.files import write_csv

COLUMNS = ("variant", "backbone", "lambda_max", "seed", "class", "n_samples", "n_correct", "accuracy",
           "lcam_paper", "lcam_robust", "zero_map_share", "energy_pointing_game", "pointing_game")  # fmt: skip
METRICS = ("lcam_paper", "lcam_robust", "zero_map_share", "energy_pointing_game", "pointing_game", "accuracy")
CHANGES = (("L_CAM (paper)", "lcam_paper", 4), ("all-zero maps", "zero_map_share", 3),
           ("EPG", "energy_pointing_game", 3), ("PG", "pointing_game", 3), ("accuracy", "accuracy", 3))  # fmt: skip


def score_run(run_dir: Path, split: str) -> list[dict]:
    """One row per class of the final model in ``run_dir``."""
    config = RunResults.load(run_dir).config
    loaded = load_model(str(run_dir))
    data = load_image_dataset(config.dataset, split)
    target = parse_target(config.target_layer)  # the resolved module name train recorded
    rows = []
    for label, name in enumerate(data.features["label"].names):
        subset = data.filter(lambda y, label=label: y == label, input_columns="label")
        result = gaze_consistency(loaded, subset, target=target, progress=False)
        per_class = result.per_class[name]
        localization = result.localization
        rows.append({
            "variant": config.variant, "backbone": config.model, "lambda_max": config.lambda_max,
            "seed": config.seed, "class": name, "n_samples": result.n_samples, "n_correct": result.n_correct,
            "accuracy": result.accuracy, "lcam_paper": per_class.values.get("paper"),
            "lcam_robust": per_class.values.get("robust"), "zero_map_share": result.zero_map_share,
            "energy_pointing_game": localization.energy_pointing_game if localization else None,
            "pointing_game": localization.pointing_game if localization else None,
        })  # fmt: skip
    return rows


def setting_groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(variant, backbone, lambda_max, class) -> the rows of its seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["variant"], row["backbone"], row["lambda_max"], row["class"]].append(row)
    return groups


def summary_table(rows: list[dict]) -> str:
    """Markdown: mean ± sd over seeds per (variant, backbone, lambda_max, class)."""
    groups = setting_groups(rows)
    header = "| variant | backbone | λ_max | class | seeds | " + " | ".join(METRICS) + " |"
    lines = [header, "|" + "---|" * (5 + len(METRICS))]
    for (variant, backbone, lam, name), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        cells = []
        for metric in METRICS:
            mean, sd, n = mean_std(row[metric] for row in group)
            cells.append(fmt_metric(mean) if sd is None else f"{fmt_metric(mean)} ± {fmt_metric(sd)}")  # sd: >= 2 seeds
        lines.append(f"| {variant} | `{backbone}` | {lam:g} | {name} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def change_cell(values: list[float | None], reference: list[float | None], digits: int) -> str:
    """``Δ [low, high] word``: mean(values) - mean(reference), its 95 % Welch interval, and lower or
    higher only where the interval excludes 0."""
    mean, reference_mean = mean_std(values)[0], mean_std(reference)[0]
    if mean is None or reference_mean is None:
        return "n/a"
    difference = f"{mean - reference_mean:+.{digits}f}"
    interval = difference_interval(values, reference)
    if interval is None:
        return f"{difference} (no spread to judge by)"
    low, high = interval
    word = "**lower**" if high < 0 else "**higher**" if low > 0 else "within the spread"
    return f"{difference} [{low:+.{digits}f}, {high:+.{digits}f}] {word}"


def change_table(rows: list[dict]) -> str:
    """Markdown: each regularised setting against the lambda_max 0 runs of its backbone and class."""
    groups = setting_groups(rows)
    baseline: dict[tuple, list[dict]] = defaultdict(list)
    for (_, backbone, lam, name), group in groups.items():
        if lam == 0:
            baseline[backbone, name] += group
    header = "| variant | backbone | λ_max | class | seeds | L_CAM ratio | " + " | ".join(
        f"Δ {n}" for n, _, _ in CHANGES
    )
    lines = [header + " |", "|" + "---|" * (6 + len(CHANGES))]
    for (variant, backbone, lam, name), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        reference = baseline.get((backbone, name))
        if lam == 0 or not reference:
            continue
        ours, base = (mean_std(row["lcam_paper"] for row in g)[0] for g in (group, reference))
        cells = [f"{ours / base:.2f}" if ours is not None and base else "n/a"]
        cells += [change_cell([r[key] for r in group], [r[key] for r in reference], d) for _, key, d in CHANGES]
        lines.append(
            f"| {variant} | `{backbone}` | {lam:g} | {name} | {len(group)} vs {len(reference)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (OUT with runs/ inside)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--output", type=Path, help="write the per-run rows as CSV here")
    args = parser.parse_args(argv)
    rows = []
    for sweep in args.sweeps:
        finished = sorted(sweep.glob("runs/*/lambda_*/seed_*/results.json"))
        if not finished:
            parser.error(f"{str(sweep)!r} holds no finished run (runs/<backbone>/lambda_<v>/seed_<n>/results.json)")
        for results in finished:
            rows += score_run(results.parent, args.split)
    if args.output:
        write_csv(args.output, COLUMNS, rows)
    print(summary_table(rows))
    print("\nChange against lambda_max 0 (difference of means, 95 % Welch interval over seeds):\n")
    print(change_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
