"""The planted-image table of finished sweeps as Markdown (docs/RESULTS.md): per backbone, lambda
and variant, recall@k of the planted validation images when the per-image table is sorted by the
deviation from the class map (paper, robust) and by cross-entropy (the loss baseline), mean ± std
over seeds, then every run.

    python scripts/planted_table.py out-planted [more sweep folders]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hf_gazecons.planted_ranking import planted_runs, planted_table
from hf_gazecons.run_record import finished_runs


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep output folders (OUT/runs/...)")
    parser.add_argument(
        "--correct-only",
        action="store_true",
        help="rank the correctly classified images alone (k: the planted ones among them)",
    )
    args = parser.parse_args(argv)
    runs = {run: record for sweep in args.sweeps for run, record in finished_runs(sweep / "runs").items()}
    table = planted_table(planted_runs(runs, correct_only=args.correct_only))
    if table is None:
        print(f"error: no run with planted images under {', '.join(map(str, args.sweeps))}", file=sys.stderr)
        return 2
    print(markdown(table["header"], table["rows"]))
    print()
    print(markdown(table["run_header"], table["run_rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
