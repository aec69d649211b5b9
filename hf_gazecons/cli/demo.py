"""``hf-gazecons demo``: the README's main job — with and without the regulariser on ``builtin:shapes``."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..checks import FINITE_FLOAT, POSITIVE_INT
from ..demo import DemoSettings
from ..output_dir import check_output_dir
from .common import add_output_dir, atomic_directory


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="train a small CNN on builtin:shapes without and with the regulariser and compare",
        description="Fine-tunes a small timm CNN on the built-in shapes data twice (lambda_max = 0 and > 0), "
        "prints accuracy, kappa, L_CAM and localisation side by side and writes both runs and a picture.",
    )
    add_output_dir(parser, "both runs and the comparison", default="gazecons-demo")
    defaults = {f.name: f.default for f in fields(DemoSettings)}
    for option, kind, what in (
        ("--model", str, "timm architecture"),
        ("--epochs", POSITIVE_INT, "epochs of each run"),
        ("--lambda-max", FINITE_FLOAT, "lambda_max of the regularised run"),
        ("--dataset", str, "data set"),
        ("--image-size", POSITIVE_INT, "square input size"),
    ):
        default = defaults[option[2:].replace("-", "_")]
        parser.add_argument(option, type=kind, default=None, help=f"{what} (default: {default})")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.output_dir)  # before anything is loaded
    from dataclasses import replace

    from ..demo import comparison_table, run_demo

    chosen = dict(
        model=args.model,
        epochs=args.epochs,
        lambda_max=args.lambda_max,
        dataset=args.dataset,
        image_size=args.image_size,
    )
    settings = replace(DemoSettings(), **{k: v for k, v in chosen.items() if v is not None})
    with atomic_directory(args.output_dir) as staging:
        runs = run_demo(staging, settings)
    print(comparison_table(runs))
    print(f"wrote {args.output_dir}/baseline, {args.output_dir}/regularised, class_means_comparison.png")
    return 0
