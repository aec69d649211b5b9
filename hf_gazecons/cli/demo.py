"""``hf-gazecons demo``: the README's main job — without the regulariser, with the study's objective and
with the recommended one (pearson), on ``builtin:shapes``."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

from ..demo import DemoSettings
from ..output_dir import check_output_dir
from .common import add_cam_method_option, add_output_dir, atomic_directory


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="train a small CNN on builtin:shapes without and with the regulariser (paper and pearson) and compare",
        description="Fine-tunes a small timm CNN on the built-in shapes data three times: without the regulariser, "
        "with the study's objective (variant paper) and with the recommended one (variant pearson, its class map "
        "following the horizontal flip); prints "
        "accuracy, kappa, both L_CAMs, the share of all-zero maps and localisation side by side and writes the "
        "three runs and a picture.",
    )
    add_output_dir(parser, "the three runs and the comparison", default="gazecons-demo")
    defaults = {f.name: f.default for f in fields(DemoSettings)}
    for option, what in (
        ("--model", "timm architecture"),
        ("--epochs", "epochs of each run"),
        ("--lambda-max", "lambda_max of the paper run"),
        ("--pearson-lambda-max", "lambda_max of the pearson run"),
        ("--t0", "lambda is 0 up to this epoch"),
        ("--t1", "lambda reaches lambda_max at this epoch"),
        ("--dataset", "data set"),
        ("--image-size", "square input size"),
        ("--seed", "seed of the three runs (data order and initialisation)"),
    ):  # each option's rule comes from hf_gazecons.checks
        default = defaults[option[2:].replace("-", "_")]
        parser.add_argument(option, default=None, help=f"{what} (default: {default})")
    add_cam_method_option(parser, training=True)
    parser.add_argument(
        "--no-report", action="store_true", help="write no report.html (neither the runs' nor the demo's)"
    )


def run(args: argparse.Namespace) -> int:
    chosen = {f.name: getattr(args, f.name, None) for f in fields(DemoSettings)}  # the options given
    settings = replace(DemoSettings(), **{k: v for k, v in chosen.items() if v is not None})  # checks them
    check_output_dir(args.output_dir)  # before anything is loaded
    from ..demo import comparison_table, run_demo

    with atomic_directory(args.output_dir) as staging:
        runs = run_demo(staging, settings, report=not args.no_report)
    print(comparison_table(runs))
    report = "" if args.no_report else ", report.html"
    print(f"wrote {', '.join(f'{args.output_dir}/{name}' for name in runs)}, class_means_comparison.png{report}")
    return 0
