"""The tables of docs/RESULTS.md, from finished sweeps (their runs.csv and correlation.csv).

    python scripts/results_tables.py out-sweeps/paper-jitter0.05 out-sweeps/robust-jitter0.05 \
        --baseline out-sweeps/paper-jitter0.05 > tables.md

For each sweep folder: one row per backbone and lambda, mean ± sample std over seeds of the last
epoch (validation split) and of the test split, the L_CAM ratio to lambda 0 of the ``--baseline``
sweep (training at lambda 0 does not depend on the variant), and r(kappa, L_CAM) over epochs with
its 95 % confidence interval over seeds (Student's t); a correlation is called negative or positive
only where that interval excludes 0.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from scipy import stats

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hf_gazecons.formatting import fmt_mean_std  # noqa: E402
from hf_gazecons.stats import mean_std  # noqa: E402
from hf_gazecons.sweep.files import read_csv  # noqa: E402

COLUMNS = (
    ("accuracy", "accuracy", 3),
    ("L_CAM (paper)", "gaze_consistency", 4),
    ("robust L_CAM", "robust_gaze_consistency", 4),
    ("all-zero maps", "zero_map_share", 3),
    ("EPG", "energy_pointing_game", 3),
    ("PG", "pointing_game", 3),
    ("test accuracy", "test_accuracy", 3),
    ("test L_CAM", "test_gaze_consistency", 4),
)


def last_rows(folder: Path) -> dict[tuple[str, float], list[dict]]:
    """(backbone, lambda) -> the last epoch's row of each seed."""
    last: dict[tuple[str, float, float], dict] = {}
    for row in read_csv(folder / "runs.csv"):
        key = (row["backbone"], row["lambda"], row["seed"])
        if key not in last or row["epoch"] > last[key]["epoch"]:
            last[key] = row
    groups: dict[tuple[str, float], list[dict]] = {}
    for (backbone, lam, _), row in last.items():
        groups.setdefault((backbone, lam), []).append(row)
    return groups


def correlation(folder: Path) -> dict[tuple[str, float], str]:
    """(backbone, lambda) -> "r ± sd [low, high] (sign)" of r(kappa, L_CAM) over seeds."""
    cells = {}
    for row in read_csv(folder / "correlation.csv"):
        values = [v for k, v in row.items() if k.startswith("r_seed_") and v is not None]
        mean, std, n = mean_std(values)
        if mean is None or std is None:
            cells[(row["backbone"], row["lambda"])] = fmt_mean_std(mean, std, 2)
            continue
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        sign = "negative" if mean + half < 0 else "positive" if mean - half > 0 else "not signed"
        cells[(row["backbone"], row["lambda"])] = (
            f"{fmt_mean_std(mean, std, 2)} [{mean - half:.2f}, {mean + half:.2f}] {sign}"
        )
    return cells


def table(folder: Path, baseline: Path) -> str:
    groups, reference, r = last_rows(folder), last_rows(baseline), correlation(folder)
    head = ["backbone", "λ_max", "seeds", *(name for name, _, _ in COLUMNS), "L_CAM ratio", "r(κ, L_CAM), 95 % CI"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted(set(groups) | {k for k in reference if k[1] == 0.0}, key=lambda k: (k[0], k[1]))
    for backbone, lam in keys:
        rows = groups.get((backbone, lam)) or reference[(backbone, lam)]
        cells = [f"`{backbone}`", f"{lam:g}", str(len(rows))]
        cells += [fmt_mean_std(*mean_std(row[column] for row in rows)[:2], digits) for _, column, digits in COLUMNS]
        base = mean_std(row["gaze_consistency"] for row in reference.get((backbone, 0.0), []))[0]
        ours = mean_std(row["gaze_consistency"] for row in rows)[0]
        cells.append(f"{ours / base:.2f}" if base and ours is not None else "n/a")
        cells.append(r.get((backbone, lam)) or correlation(baseline).get((backbone, lam), "n/a"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep output folders")
    parser.add_argument("--baseline", type=Path, required=True, help="the sweep whose lambda 0 runs are the baseline")
    args = parser.parse_args()
    for folder in args.folders:
        print(f"### {folder.name}\n\n{table(folder, args.baseline)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
