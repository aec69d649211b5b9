"""``hf-gazecons``: one sub-command per module of this package (``score``, ``train``, ``demo``, ``cam``, ...)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from ..errors import GazeConsError
from . import cam, demo, push, score, sweep, train

COMMANDS = {"score": score, "train": train, "demo": demo, "cam": cam, "push": push, "sweep": sweep}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-gazecons",
        description="Grad-CAM gaze consistency for image classifiers: measure it, train with it, publish it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(commands, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    try:
        if argv and argv[0] == "train":  # HfArgumentParser owns train's options
            return train.main(argv[1:])
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command].run(args)
    except GazeConsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
