"""``hf-gazecons report DIR``: the self-contained ``report.html`` of a score, train, demo or sweep output."""

from __future__ import annotations

import argparse

from ..errors import UsageError


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="write report.html: one self-contained page of a score, train, demo or sweep output",
        description="One HTML file, pictures inline, no network access: the summary, the class-mean grid, each "
        "class's most and least consistent images, histograms of the deviations, the per-image table (sortable "
        "and filterable), and for a sweep its curves, finals against lambda and class means per lambda.",
    )
    parser.add_argument("directory", metavar="DIR", nargs="?", help="a folder written by score, train, demo or sweep")
    parser.add_argument(
        "--output-dir",
        dest="directory_option",
        metavar="DIR",
        help="the same folder, given as an option (default: the positional DIR)",
    )
    parser.add_argument("--output", default=None, help="the HTML file to write (default: DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    given = [folder for folder in (args.directory, args.directory_option) if folder is not None]
    if len(given) != 1:
        raise UsageError("name the output folder once: `hf-gazecons report DIR`")
    path = write_report(given[0], args.output)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
