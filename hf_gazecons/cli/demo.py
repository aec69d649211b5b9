"""``hf-gazecons demo``: the README's main job — with and without the regulariser on ``builtin:shapes``."""

from __future__ import annotations

import argparse

from .common import atomic_directory


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    parser = commands.add_parser(
        name,
        help="train a small CNN on builtin:shapes without and with the regulariser (paper and robust) and compare",
        description="Fine-tunes a small timm CNN on the built-in shapes data three times: without the regulariser, "
        "with the study's objective (variant paper) and with the collapse-safe one (variant robust); prints "
        "accuracy, kappa, both L_CAMs, the share of all-zero maps and localisation side by side and writes the "
        "three runs and a picture.",
    )
    parser.add_argument("--output-dir", default="gazecons-demo", help="a new (or empty) folder")
    for option, kind, what in (
        ("--model", str, "timm architecture"),
        ("--epochs", int, "epochs of each run"),
        ("--lambda-max", float, "lambda_max of the regularised runs"),
        ("--t0", int, "lambda is 0 up to this epoch"),
        ("--t1", int, "lambda reaches lambda_max at this epoch"),
        ("--dataset", str, "data set"),
        ("--image-size", int, "square input size"),
    ):
        parser.add_argument(option, type=kind, default=None, help=f"{what} (default: the demo's, see DemoSettings)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..demo import DemoSettings, comparison_table, run_demo

    chosen = dict(
        model=args.model,
        epochs=args.epochs,
        lambda_max=args.lambda_max,
        t0=args.t0,
        t1=args.t1,
        dataset=args.dataset,
        image_size=args.image_size,
    )
    settings = replace(DemoSettings(), **{k: v for k, v in chosen.items() if v is not None})
    with atomic_directory(args.output_dir) as staging:
        runs = run_demo(staging, settings)
    print(comparison_table(runs))
    print(f"wrote {', '.join(f'{args.output_dir}/{name}' for name in runs)}, class_means_comparison.png")
    return 0
