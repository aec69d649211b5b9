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

and the printed table compares, per model, each regularised arm with the lambda-0 arm of the same
model under every method: mean ± sd over seeds of L_CAM (paper) and the difference with its 95 %
Welch interval (``hf_gazecons.formatting.fmt_difference``): does a model regularised under one
method become more consistent under the others?
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
from hf_gazecons.sweep.files import write_csv  # noqa: E402

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


def transfer_table(rows: list[dict], metric: str = "gaze_consistency") -> str:
    """Per model and regularised arm, per method: the arm's and the lambda-0 arm's ``metric`` (mean ± sd
    over seeds) and their difference with its 95 % Welch interval."""
    arms: dict[tuple, dict[str, list]] = {}
    for row in rows:
        key = (row["model"], row["lambda_max"], row["variant"], row["trained_cam_method"])
        arms.setdefault(key, {}).setdefault(row["cam_method"], []).append(row[metric])
    lines = []
    for (model, lam, variant, trained), by_method in sorted(arms.items(), key=lambda item: str(item[0])):
        if lam == 0:
            continue
        baseline = next((v for (m, b, _, _), v in arms.items() if m == model and b == 0), None)
        lines.append(f"\n{model}, lambda_max {lam:g}, variant {variant}, trained under {trained} ({metric}):")
        lines.append(f"  {'scored under':<21}{'lambda 0':>17}{'regularised':>17}  difference [95 % interval]")
        for method, values in by_method.items():
            reference = (baseline or {}).get(method, [])
            lines.append(
                f"  {method:<21}{fmt_mean_std(*mean_std(reference)[:2], 4):>17}"
                f"{fmt_mean_std(*mean_std(values)[:2], 4):>17}  {fmt_difference(values, reference, 4)}"
            )
    return "\n".join(lines) if lines else "no regularised arm with a lambda-0 arm of the same model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders, or folders holding runs")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the two CSVs go (created)")
    parser.add_argument("--methods", nargs="+", choices=cam_methods(), help="default: every method")
    parser.add_argument("--split", choices=("eval", "test"), default="eval", help="default: the evaluation split")
    parser.add_argument("--max-samples", type=int, help="a random subset (seed 42) of each split (default: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="images (and Score-CAM inputs) per forward")
    args = parser.parse_args(argv)
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
    print(transfer_table(rows))
    print(f"\nwrote {args.output_dir}/cam_transfer.csv and rank_correlations.csv ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
