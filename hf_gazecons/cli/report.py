"""``hf-gazecons report DIR``: the self-contained ``report.html`` of a score, train, demo or sweep output."""

from __future__ import annotations

import argparse

from .common import add_existing_output_dir, existing_output_dir


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="write report.html: one self-contained page of a score, train, demo or sweep output",
        description="One HTML file, pictures inline, no network access: the summary, the class-mean grid, each "
        "class's most and least consistent images, histograms of the deviations, the per-image table (sortable "
        "and filterable), and for a sweep its curves, finals against lambda and class means per lambda.",
    )
    add_existing_output_dir(parser, "a folder written by score, train, demo or sweep")
    parser.add_argument("--output", default=None, help="the HTML file to write (default: OUTPUT_DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    folder = existing_output_dir(args, "name the output folder once: `hf-gazecons report OUTPUT_DIR`")
    path = write_report(folder, args.output)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
