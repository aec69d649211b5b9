"""Cross-method transfer: re-score finished training runs under every CAM method.

    python scripts/cam_transfer.py demo-seed0 demo-seed1 demo-seed2 --output-dir out-transfer
    python scripts/cam_transfer.py out-sweep/runs/test_resnet --methods gradcam layercam eigencam --output-dir out

Each folder is a training run (it holds ``results.json``) or holds runs below it (a demo's three arms,
a sweep's ``runs/``). Each run's model is scored on its evaluation split (``--split test``: its test
split), at the layer it trained with, under every method in ONE pass
(:func:`hf_gazecons.method_comparison.compare_cam_methods`). The output folder gets:

* ``cam_transfer.csv``: one row per run and method: the arm (model, lambda_max, variant, the method
  it was trained with), the seed, accuracy, L_CAM (paper and robust), the all-zero share,
  localisation where the data has masks, and the number of correct images;
* ``rank_correlations.csv``: one row per run and pair of methods: Spearman's rho of the per-image
  deviations (do the methods agree on which images are inconsistent?);
* ``cam_transfer.png``: per regularised arm and method, its L_CAM (paper) and energy pointing game
  over the lambda-0 arm's (the ratio of the means over seeds, with each seed's ratio as a dot);

and the printed table compares, per model, each regularised arm with the lambda-0 arm of the same
model under every method: mean ± sd over seeds of L_CAM (paper) and the difference with its 95 %
Welch interval (``hf_gazecons.formatting.fmt_difference``): does a model regularised under one
method become more consistent under the others? ``--rows cam_transfer.csv`` re-tabulates and re-plots
a finished run of the script without re-scoring.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hf_gazecons.cam_family import cam_methods  # noqa: E402
from hf_gazecons.errors import GazeConsError, UsageError  # noqa: E402
from hf_gazecons.filenames import RESULTS_FILE  # noqa: E402
from hf_gazecons.formatting import fmt_difference, fmt_mean_std  # noqa: E402
from hf_gazecons.run_record import finished_runs  # noqa: E402
from hf_gazecons.stats import mean_std  # noqa: E402
from hf_gazecons.sweep.files import read_csv, write_csv  # noqa: E402

COLUMNS = (
    "run", "model", "lambda_max", "variant", "trained_cam_method", "seed", "cam_method", "accuracy",
    "gaze_consistency", "robust_gaze_consistency", "zero_map_share", "energy_pointing_game", "pointing_game",
    "n_correct",
)  # fmt: skip
CORRELATION_COLUMNS = ("run", "cam_method_a", "cam_method_b", "spearman")


def find_runs(folders: list[Path]) -> list[Path]:
    """The run folders (with results.json) among and below ``folders``, each once, in path order."""
    return sorted({run for folder in folders for run in finished_runs(folder)})


def rescore(run: Path, methods: list[str], split: str, max_samples: int | None, batch_size: int) -> tuple[list, list]:
    """One run under every method, on its split at the layer it trained with: its rows of the two CSVs."""
    from hf_gazecons.data import select_subset
    from hf_gazecons.method_comparison import compare_cam_methods
    from hf_gazecons.saved_run import SavedRun

    saved = SavedRun.load(run)
    config = saved.results.config
    name = config.test_split if split == "test" else config.eval_split
    if name is None:
        raise UsageError(f"{run} has no {split} split in its results.json")
    data = select_subset(saved.split(name), max_samples, 42)
    comparison = compare_cam_methods(saved.loaded, data, methods, target=saved.target, batch_size=batch_size)
    arm = {
        "run": str(run), "model": config.model, "lambda_max": config.lambda_max, "variant": config.variant,
        "trained_cam_method": config.cam_method, "seed": config.seed,
    }  # fmt: skip
    rows = []
    for method, result in comparison.results.items():
        where = result.localization
        rows.append({
            **arm, "cam_method": method, "accuracy": result.accuracy, "gaze_consistency": result.values["paper"],
            "robust_gaze_consistency": result.values["robust"], "zero_map_share": result.zero_map_share,
            "energy_pointing_game": where.energy_pointing_game if where else None,
            "pointing_game": where.pointing_game if where else None, "n_correct": result.n_correct,
        })  # fmt: skip
    correlations = [
        {"run": str(run), "cam_method_a": a, "cam_method_b": b, "spearman": rho}
        for (a, b), rho in comparison.rank_correlations.items()
    ]
    return rows, correlations


def _arms(rows: list[dict], metric: str) -> dict[tuple, dict[str, dict[float, float]]]:
    """(model, lambda_max, variant, trained_cam_method) -> method -> seed -> ``metric``."""
    arms: dict[tuple, dict[str, dict[float, float]]] = {}
    for row in rows:
        key = (row["model"], row["lambda_max"], row["variant"], row["trained_cam_method"])
        arms.setdefault(key, {}).setdefault(row["cam_method"], {})[row["seed"]] = row[metric]
    return arms


def plot_transfer(rows: list[dict], path: Path) -> None:
    """``cam_transfer.png``: per regularised arm (one colour) and method, regularised over lambda 0
    of L_CAM (paper) and of the energy pointing game: a bar for the ratio of the means over seeds,
    a dot per seed paired with the lambda-0 run of the same seed; 1 (no change) as a line."""
    from hf_gazecons.plots import plt

    metrics = [("gaze_consistency", "L_CAM (paper), regularised / λ 0")]
    if any(row.get("energy_pointing_game") is not None for row in rows):
        metrics.append(("energy_pointing_game", "energy pointing game, regularised / λ 0"))
    methods = list(dict.fromkeys(row["cam_method"] for row in rows))
    figure, axes = plt.subplots(len(metrics), 1, figsize=(1.1 * len(methods) + 2.5, 3.2 * len(metrics)), squeeze=False)
    for ax, (metric, label) in zip(axes[:, 0], metrics):
        arms = _arms(rows, metric)
        regularised = [key for key in sorted(arms, key=str) if key[1] != 0]
        width = 0.8 / max(len(regularised), 1)
        for k, key in enumerate(regularised):
            baseline = next((v for (m, b, _, _), v in arms.items() if m == key[0] and b == 0), {})
            for j, method in enumerate(methods):
                pairs = [(v, baseline.get(method, {}).get(seed)) for seed, v in arms[key].get(method, {}).items()]
                pairs = [(v, b) for v, b in pairs if v is not None and b]
                if not pairs:
                    continue
                x = j + (k - (len(regularised) - 1) / 2) * width
                ratio = sum(v for v, _ in pairs) / sum(b for _, b in pairs)
                ax.bar(x, ratio, width, color=f"C{k}", alpha=0.6, label=None if j else f"{key[2]} λ {key[1]:g} ({key[0]})")
                ax.scatter([x] * len(pairs), [v / b for v, b in pairs], s=9, color=f"C{k}", zorder=3)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7)
    axes[0, 0].set_title("scored under each CAM method (bar: ratio of the means over seeds; dot: one seed)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def transfer_table(rows: list[dict], metric: str = "gaze_consistency") -> str:
    """Per model and regularised arm, per method: the arm's and the lambda-0 arm's ``metric`` (mean ± sd
    over seeds) and their difference with its 95 % Welch interval."""
    arms = _arms(rows, metric)
    lines = []
    for (model, lam, variant, trained), by_method in sorted(arms.items(), key=lambda item: str(item[0])):
        if lam == 0:
            continue
        baseline = next((v for (m, b, _, _), v in arms.items() if m == model and b == 0), None)
        lines.append(f"\n{model}, lambda_max {lam:g}, variant {variant}, trained under {trained} ({metric}):")
        lines.append(f"  {'scored under':<21}{'lambda 0':>17}{'regularised':>17}  difference [95 % interval]")
        for method, by_seed in by_method.items():
            values, reference = list(by_seed.values()), list((baseline or {}).get(method, {}).values())
            lines.append(
                f"  {method:<21}{fmt_mean_std(*mean_std(reference)[:2], 4):>17}"
                f"{fmt_mean_std(*mean_std(values)[:2], 4):>17}  {fmt_difference(values, reference, 4)}"
            )
    return "\n".join(lines) if lines else "no regularised arm with a lambda-0 arm of the same model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="run folders, or folders holding runs")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the two CSVs go (created)")
    parser.add_argument("--methods", nargs="+", choices=cam_methods(), help="default: every method")
    parser.add_argument("--split", choices=("eval", "test"), default="eval", help="default: the evaluation split")
    parser.add_argument("--max-samples", type=int, help="a random subset (seed 42) of each split (default: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="images (and Score-CAM inputs) per forward")
    parser.add_argument("--rows", type=Path, help="a cam_transfer.csv: re-tabulate and re-plot it, re-scoring nothing")
    args = parser.parse_args(argv)
    if args.rows is not None:
        return _from_rows(args.rows, args.output_dir)
    if not args.folders:
        parser.error("give run folders (or --rows CSV)")
    runs = find_runs(args.folders)
    if not runs:
        parser.error(f"no finished run ({RESULTS_FILE}) in or below {', '.join(map(str, args.folders))}")
    methods = list(args.methods or cam_methods())
    rows, correlations = [], []
    try:
        for i, run in enumerate(runs, 1):
            print(f"[{i}/{len(runs)}] {run}", file=sys.stderr, flush=True)
            found, pairs = rescore(run, methods, args.split, args.max_samples, args.batch_size)
            rows += found
            correlations += pairs
    except GazeConsError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(args.output_dir / "cam_transfer.csv", COLUMNS, rows)
    write_csv(args.output_dir / "rank_correlations.csv", CORRELATION_COLUMNS, correlations)
    plot_transfer(rows, args.output_dir / "cam_transfer.png")
    print(transfer_table(rows))
    print(f"\nwrote {args.output_dir}/cam_transfer.csv, rank_correlations.csv and cam_transfer.png ({len(runs)} runs)")
    return 0


def _from_rows(path: Path, output_dir: Path) -> int:
    if not path.is_file():
        print(f"error: --rows {path} is not a file", file=sys.stderr)
        return 2
    rows = read_csv(path)
    if not rows or set(COLUMNS) - set(rows[0]):
        print(f"error: --rows {path} is not a cam_transfer.csv (columns {', '.join(COLUMNS)})", file=sys.stderr)
        return 2
    output_dir.mkdir(parents=True, exist_ok=True)
    plot_transfer(rows, output_dir / "cam_transfer.png")
    print(transfer_table(rows))
    print(f"\nwrote {output_dir}/cam_transfer.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
