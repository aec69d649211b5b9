"""Per-class final evaluation of finished sweep runs on data with masks (docs/BRAIN.md's study table).

For every run folder under the sweep folders given (``OUT/runs/<backbone>/lambda_<v>/seed_<n>``), the
saved final model is scored once per class on that class's images of the evaluation split, with the
run's data set, target layer and preprocessing. Per class: L_CAM (paper and robust variants), the
share of all-zero maps among the correct samples, the energy pointing game, the pointing game (over
correct samples with a mask) and the accuracy. One evaluation of a class subset gives exactly that
class's L_CAM of the whole split, because a class's representative map uses that class's samples only.

python scripts/per_class_table.py out-brain/paper out-brain/robust --output out-brain/per_class.csv
python scripts/per_class_table.py --rows out-brain/per_class.csv      # the tables again, no scoring

Prints three markdown tables: mean ± sample sd over seeds per (variant, backbone, lambda_max, class)
(the mean alone for one seed); each regularised setting's change against the lambda_max 0 runs of
the same backbone and class (training at lambda 0 does not depend on the variant; a change of a
share has its interval cut to [-1, 1], the range it cannot leave); and whether the
regulariser lowered the L_CAM of an anatomically fixed class (``--hypothesis``, default pituitary)
by a larger factor than that of a wandering one (glioma). Differences come with their 95 % interval
(Welch's t over seeds, ``stats.difference_interval``) and are called lower or higher only where
that interval excludes 0.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from hf_gazecons.formatting import fmt_difference, fmt_mean_std, fmt_metric
from hf_gazecons.run_record import finished_runs
from hf_gazecons.saved_run import SavedRun
from hf_gazecons.stats import difference_interval, interval_sign, mean_std
from hf_gazecons.sweep.files import read_csv, write_csv

COLUMNS = ("variant", "backbone", "lambda_max", "seed", "class", "n_samples", "n_correct", "accuracy",
           "lcam_paper", "lcam_robust", "zero_map_share", "energy_pointing_game", "pointing_game")  # fmt: skip
METRICS = ("lcam_paper", "lcam_robust", "zero_map_share", "energy_pointing_game", "pointing_game", "accuracy")
SHARES = ("zero_map_share", "energy_pointing_game", "pointing_game", "accuracy")
SHARE_DIFFERENCE = (-1.0, 1.0)
"""Two shares differ by at most 1: their difference's interval is cut to [-1, 1] (which keeps its coverage)."""
CHANGES = (("L_CAM (paper)", "lcam_paper", 4), ("all-zero maps", "zero_map_share", 3),
           ("EPG", "energy_pointing_game", 3), ("PG (0 px)", "pointing_game", 3), ("accuracy", "accuracy", 3))  # fmt: skip


def score_run(run_dir: Path, split: str) -> list[dict]:
    """One row per class of the final model in ``run_dir``, at the layer it trained with."""
    run = SavedRun.load(run_dir)
    config, data = run.results.config, run.split(split)
    rows = []
    for label, name in enumerate(data.features["label"].names):
        subset = data.filter(lambda y, label=label: y == label, input_columns="label")
        result = run.score(subset)
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
            cells.append(fmt_metric(mean) if sd is None else f"{fmt_metric(mean)} ± {fmt_metric(sd)}")  # 2+ seeds
        lines.append(f"| {variant} | `{backbone}` | {lam:g} | {name} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def baseline_groups(groups: dict[tuple, list[dict]]) -> dict[tuple, list[dict]]:
    """(backbone, class) -> the lambda_max 0 rows of any variant (at lambda 0 the variant trains nothing)."""
    baseline: dict[tuple, list[dict]] = defaultdict(list)
    for (_, backbone, lam, name), group in groups.items():
        if lam == 0:
            baseline[backbone, name] += group
    return baseline


def regularised_settings(groups: dict[tuple, list[dict]]) -> list[tuple]:
    """The (variant, backbone, lambda_max, class) keys with lambda_max != 0, by backbone, variant, lambda."""
    return sorted((key for key in groups if key[2] != 0), key=lambda k: (k[1], k[0], k[2], k[3]))


def change_table(rows: list[dict]) -> str:
    """Markdown: each regularised setting against the lambda_max 0 runs of its backbone and class. The
    L_CAM compared is the setting's own variant's (what its runs were trained to lower)."""
    groups = setting_groups(rows)
    baseline = baseline_groups(groups)
    changes = (("L_CAM (its variant)", None, 4), *CHANGES[1:])
    header = "| variant | backbone | λ_max | class | seeds | L_CAM ratio, paper / robust | "
    lines = [header + " | ".join(f"Δ {n}" for n, _, _ in changes) + " |", "|" + "---|" * (6 + len(changes))]
    for variant, backbone, lam, name in regularised_settings(groups):
        group, reference = groups[variant, backbone, lam, name], baseline.get((backbone, name))
        if not reference:
            continue
        ratios = []
        for key in ("lcam_paper", "lcam_robust"):
            ours, base = (mean_std(row[key] for row in g)[0] for g in (group, reference))
            ratios.append(f"{ours / base:.2f}" if ours is not None and base else "n/a")
        cells = [" / ".join(ratios)]
        for _, key, digits in changes:
            bounds = SHARE_DIFFERENCE if key in SHARES else None
            key = key or f"lcam_{variant}"
            cells.append(fmt_difference([r[key] for r in group], [r[key] for r in reference], digits, bounds))
        row = f"| {variant} | `{backbone}` | {lam:g} | {name} | {len(group)} vs {len(reference)} | "
        lines.append(row + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_gaps(rows: list[dict], fixed: str, wandering: str, key: str) -> list[float]:
    """Per run: log10 L_CAM(fixed) - log10 L_CAM(wandering) of one model, both from ``key``; runs where
    either L_CAM is missing or 0 (no logarithm) are left out."""
    by_run: dict[tuple, dict[str, float | None]] = defaultdict(dict)
    for row in rows:
        by_run[row["variant"], row["backbone"], row["lambda_max"], row["seed"]][row["class"]] = row[key]
    gaps = []
    for values in by_run.values():
        a, b = values.get(fixed), values.get(wandering)
        if a and b and a > 0 and b > 0:
            gaps.append(math.log10(a) - math.log10(b))
    return gaps


def hypothesis_table(rows: list[dict], fixed: str, wandering: str) -> str:
    """Markdown: did the regulariser lower the ``fixed`` class's L_CAM by a larger factor than the
    ``wandering`` class's? Per run, the gap log10 L_CAM(fixed) - log10 L_CAM(wandering) (the same
    model on both classes); the regularised setting's mean gap minus the baseline's, with its 95 %
    Welch interval over seeds. Negative: the fixed class's L_CAM fell by the larger factor."""
    header = (f"| variant | backbone | λ_max | runs | log10 gap, baseline | log10 gap, regularised | "
              f"Δ gap [95 % CI] | {fixed} fell by the larger factor? |")  # fmt: skip
    lines = [header, "|" + "---|" * 8]
    settings = sorted({(r["backbone"], r["variant"], r["lambda_max"]) for r in rows if r["lambda_max"] != 0})
    for backbone, variant, lam in settings:
        key = f"lcam_{variant}"
        runs = [r for r in rows if (r["backbone"], r["variant"], r["lambda_max"]) == (backbone, variant, lam)]
        ours = class_gaps(runs, fixed, wandering, key)
        base = class_gaps([r for r in rows if (r["backbone"], r["lambda_max"]) == (backbone, 0)], fixed, wandering, key)
        interval = difference_interval(ours, base)
        if interval is None:
            verdict, delta = "too few runs", "n/a"
        else:
            low, high = interval
            verdict = {-1: "**yes**", 0: "within the spread", 1: "**no, the reverse**"}[interval_sign(low, high)]
            delta = f"{np.mean(ours) - np.mean(base):+.2f} [{low:+.2f}, {high:+.2f}]"
        cells = [fmt_mean_std(*mean_std(base)[:2], 2), fmt_mean_std(*mean_std(ours)[:2], 2), delta, verdict]
        lines.append(f"| {variant} | `{backbone}` | {lam:g} | {len(ours)} vs {len(base)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _saved_rows(parser: argparse.ArgumentParser, path: Path) -> list[dict]:
    """The rows of an earlier ``--output``; a usage error for anything else."""
    if not path.is_file():
        parser.error(f"--rows {str(path)!r} is not a file")
    rows = read_csv(path)
    missing = [column for column in COLUMNS if column not in (rows[0] if rows else {})]
    if missing:
        parser.error(f"--rows {str(path)!r} is not a per-class table written by --output (no rows with {missing})")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="*", type=Path, help="sweep folders (OUT with runs/ inside)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--output", type=Path, help="write the per-run rows as CSV here")
    parser.add_argument("--rows", type=Path, help="tabulate the rows of an earlier --output instead of scoring")
    parser.add_argument("--hypothesis", nargs=2, default=("pituitary", "glioma"), metavar=("FIXED", "WANDERING"),
                        help="the classes whose L_CAM changes the last table compares")  # fmt: skip
    args = parser.parse_args(argv)
    if bool(args.sweeps) == bool(args.rows):
        parser.error("name sweep folders to score, or --rows CSV to tabulate (one of the two)")
    rows = _saved_rows(parser, args.rows) if args.rows else []
    for sweep in args.sweeps:
        finished = finished_runs(sweep / "runs")
        if not finished:
            parser.error(f"{str(sweep)!r} holds no finished run (runs/<backbone>/lambda_<v>/seed_<n>/results.json)")
        for run_dir in finished:
            rows += score_run(run_dir, args.split)
    if args.output:
        write_csv(args.output, COLUMNS, rows)
    fixed, wandering = args.hypothesis
    print(summary_table(rows))
    print("\nChange against lambda_max 0 (difference of means, 95 % Welch interval over seeds):\n")
    print(change_table(rows))
    print(f"\nDid {fixed}'s L_CAM fall by a larger factor than {wandering}'s (L_CAM of the setting's variant)?\n")
    print(hypothesis_table(rows, fixed, wandering))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
