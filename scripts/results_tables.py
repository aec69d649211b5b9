"""The tables of docs/RESULTS.md, from finished sweeps (their runs.csv and correlation.csv).

    python scripts/results_tables.py out-sweeps/paper-jitter0.05 out-sweeps/robust-jitter0.05 \
        --baseline out-sweeps/paper-jitter0.05 > tables.md

With ``--class-means PNG RUN ...`` it draws instead the validation class-mean Grad-CAM of the given
run folders (one row each, at the runs' target layer) into one picture. With ``--sanity`` it prints
instead, per sweep folder, the cascading-randomisation table from its ``sanity_summary.csv``
(``hf-gazecons sweep --collect --sanity``): the Spearman correlation of the original and the
randomised maps after the classifier, after the next block and fully re-initialised.

For each sweep folder: one row per backbone and lambda, mean ± sample std over seeds of the last
epoch (validation split) and of the test split, the L_CAM ratio to lambda 0 of the ``--baseline``
sweep (training at lambda 0 does not depend on the variant), and r(kappa, L_CAM) over epochs with
its 95 % confidence interval over seeds (Student's t on Fisher's z, ``stats.correlation_interval``);
a correlation is called negative or positive only where that interval excludes 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hf_gazecons.formatting import fmt_difference, fmt_mean_std, fmt_metric  # noqa: E402
from hf_gazecons.run_record import CONSISTENCY, metric_key, variant_metric  # noqa: E402
from hf_gazecons.stats import correlation_interval, interval_sign, mean_std  # noqa: E402
from hf_gazecons.sweep.files import read_csv  # noqa: E402
from hf_gazecons.sweep.tables import final_rows  # noqa: E402

COLUMNS = (
    ("accuracy", "accuracy", 3),
    ("L_CAM (paper)", CONSISTENCY, 4),
    ("robust L_CAM", variant_metric("robust"), 4),
    ("pearson L_CAM", variant_metric("pearson"), 4),
    ("all-zero maps", "zero_map_share", 3),
    ("EPG", "energy_pointing_game", 3),
    ("PG (0 px)", "pointing_game", 3),
    ("test accuracy", metric_key("test", "accuracy"), 3),
    ("test L_CAM", metric_key("test", CONSISTENCY), 4),
)


def finals(folder: Path) -> dict[tuple[str, float], dict]:
    """(backbone, lambda) -> the last epoch's mean and sd over seeds (``sweep.tables.final_rows``)."""
    return {(row["backbone"], row["lambda"]): row for row in final_rows(read_csv(folder / "runs.csv"))}


def correlation(folder: Path) -> dict[tuple[str, float], str]:
    """(backbone, lambda) -> "r ± sd [low, high] (sign)" of r(kappa, L_CAM) over seeds."""
    cells = {}
    for row in read_csv(folder / "correlation.csv"):
        values = [v for k, v in row.items() if k.startswith("r_seed_") and v is not None]
        mean, std, _ = mean_std(values)
        interval = correlation_interval(values)
        if interval is None:
            cells[(row["backbone"], row["lambda"])] = fmt_mean_std(mean, std, 2)
            continue
        low, high = interval
        sign = {-1: "negative", 0: "not signed", 1: "positive"}[interval_sign(low, high)]
        cells[(row["backbone"], row["lambda"])] = f"{fmt_mean_std(mean, std, 2)} [{low:.2f}, {high:.2f}] {sign}"
    return cells


def table(folder: Path, baseline: Path) -> str:
    groups, reference, r = finals(folder), finals(baseline), correlation(folder)
    head = ["backbone", "λ_max", "seeds", *(name for name, _, _ in COLUMNS), "L_CAM ratio", "r(κ, L_CAM), 95 % CI"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted(set(groups) | {k for k in reference if k[1] == 0.0}, key=lambda k: (k[0], k[1]))
    for backbone, lam in keys:
        row = groups.get((backbone, lam)) or reference[(backbone, lam)]
        cells = [f"`{backbone}`", f"{lam:g}", str(row["n_seeds"])]
        cells += [fmt_mean_std(row[f"{column}_mean"], row[f"{column}_std"], digits) for _, column, digits in COLUMNS]
        base = reference.get((backbone, 0.0), {}).get(f"{CONSISTENCY}_mean")
        ours = row[f"{CONSISTENCY}_mean"]
        cells.append(f"{ours / base:.2f}" if base and ours is not None else "n/a")
        cells.append(r.get((backbone, lam)) or correlation(baseline).get((backbone, lam), "n/a"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sanity_table(folder: Path, baseline: Path | None = None) -> str:
    """(backbone, lambda) -> Spearman mean ± std over runs at steps 1, 2 and the last, and the share of
    constant (unrankable) maps of the original and of the fully re-initialised model. With a
    ``baseline`` sweep, also the step-1 difference from its lambda 0 runs with a 95 % Welch interval."""
    steps: dict[tuple[str, float], dict[int, dict]] = {}
    for row in read_csv(folder / "sanity_summary.csv"):
        steps.setdefault((row["backbone"], row["lambda"]), {})[int(row["step"])] = row
    head = ["backbone", "λ_max", "runs", "after the classifier", "+ the next block", "fully re-initialised",
            "constant maps, original / fully random"]  # fmt: skip
    if baseline:
        head.append("after the classifier, Δ against λ = 0")
        reference = _step_values(baseline / "sanity.csv", 1)
        ours = _step_values(folder / "sanity.csv", 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (backbone, lam), by_step in sorted(steps.items()):
        last = by_step[max(by_step)]
        cells = [f"`{backbone}`", f"{lam:g}", f"{last['n_runs']:g}"]
        cells += [fmt_mean_std(r["spearman_mean"], r["spearman_std"], 2) for r in (by_step[1], by_step[2], last)]
        cells.append(f"{fmt_metric(by_step[0]['constant_original'], 3)} / {fmt_metric(last['constant_randomized'], 3)}")
        if baseline:
            base = reference.get((backbone, 0.0), [])
            cells.append("" if lam == 0 else fmt_difference(ours.get((backbone, lam), []), base, 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _step_values(path: Path, step: int) -> dict[tuple[str, float], list[float | None]]:
    """(backbone, lambda) -> each run's mean Spearman at ``step`` (``sanity.csv``)."""
    values: dict[tuple[str, float], list[float | None]] = {}
    for row in read_csv(path):
        if row["step"] == step:
            values.setdefault((row["backbone"], row["lambda"]), []).append(row["spearman_mean"])
    return values


def class_means(path: Path, runs: list[Path]) -> None:
    """The validation class means of each run (``RUN: lambda, variant, L_CAM, all-zero share``)."""
    from hf_gazecons.plots import plot_class_means
    from hf_gazecons.saved_run import SavedRun

    rows, names = {}, None
    for folder in runs:
        run = SavedRun.load(folder)
        config, result = run.results.config, run.score()
        names = config.label_names
        label = (
            f"λ {config.lambda_max:g} {config.variant}: L_CAM {fmt_metric(result.value)}, "
            f"zero {fmt_metric(result.zero_map_share, 3)}"
        )
        rows[label] = result.class_means
    plot_class_means(rows, names, path, title="Class-mean Grad-CAM, validation split")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="sweep output folders")
    parser.add_argument("--baseline", type=Path, help="the sweep whose lambda 0 runs are the baseline")
    parser.add_argument("--class-means", nargs="+", type=Path, metavar=("PNG", "RUN"), help="picture, run folders")
    parser.add_argument("--sanity", action="store_true", help="the randomisation tables of the sweep folders")
    args = parser.parse_args(argv)
    if args.class_means:
        if len(args.class_means) < 2:
            parser.error("--class-means PNG RUN [RUN ...]: name the picture and at least one run folder")
        class_means(args.class_means[0], args.class_means[1:])
        return 0
    if args.sanity:
        if not args.folders:
            parser.error("--sanity needs the sweep folders to tabulate")
        for folder, name in [*((f, "sanity_summary.csv") for f in args.folders), (args.baseline, "sanity.csv")]:
            if folder is not None and not (folder / name).is_file():
                parser.error(f"{str(folder)!r} has no {name} (hf-gazecons sweep --collect --sanity)")
        for folder in args.folders:
            print(f"### {folder.name}\n\n{sanity_table(folder, args.baseline)}\n")
        return 0
    if not args.folders or args.baseline is None:
        parser.error("sweep folders and --baseline are needed for the tables")
    for folder in (*args.folders, args.baseline):
        if not (folder / "runs.csv").is_file():
            parser.error(f"{str(folder)!r} is not a finished sweep: it has no runs.csv (hf-gazecons sweep --collect)")
    for folder in args.folders:
        print(f"### {folder.name}\n\n{table(folder, args.baseline)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
