"""``hf-gazecons``: one sub-command per module of this package (``score``, ``train``, ``demo``, ``cam``, ...)."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from ..errors import GazeConsError, one_line
from . import app, cam, demo, push, report, score, sweep, train
from .common import Parser
from .help_cache import asks_for_help, cached_help

COMMANDS = {
    "score": score, "train": train, "demo": demo, "cam": cam, "push": push, "sweep": sweep,
    "report": report, "app": app,
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hf-gazecons",
        description="Grad-CAM gaze consistency for image classifiers: measure it, train with it, publish it. "
        "Every long option is accepted with dashes or underscores (--output-dir, --output_dir).",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the versions and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(commands, name)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def version_line() -> str:
    """``hf-gazecons X (torch ..., timm ..., ...)``, read from the installed metadata (nothing imported)."""
    parts = []
    for package in ("torch", "timm", "transformers", "datasets", "accelerate", "huggingface-hub"):
        try:
            parts.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{package} missing")
    return f"hf-gazecons {__version__} ({', '.join(parts)}; Python {platform.python_version()})"


def _no_progress_bars() -> None:
    """Progress bars are for terminals; in pipes and logs (and around a one-line error) they are noise."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when datasets is imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:  # already imported (e.g. by the caller of main)
        sys.modules["datasets"].disable_progress_bars()


def _out_of_memory(error: RuntimeError) -> bool:
    text = str(error)
    return type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text


class _Version(argparse.Action):
    """``--version``: reading the installed versions takes a moment, so only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_line())
        parser.exit()


def _show_each_warning_once() -> None:
    """``warning: <message>``, each message once per command: a training run evaluates every
    epoch, and a warning about the maps would otherwise repeat with each evaluation."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    show, shown = warnings.showwarning, set()

    def show_once(message: Warning | str, *args: object, **kwargs: object) -> None:
        if str(message) not in shown:
            shown.add(str(message))
            show(message, *args, **kwargs)

    warnings.showwarning = show_once


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # huggingface_hub prints through a handler of its own: passed on to the root one, each line came twice
    logging.getLogger("huggingface_hub").propagate = False
    _show_each_warning_once()
    if not sys.stderr.isatty():
        _no_progress_bars()
    try:
        if argv and argv[0] == "train":  # HfArgumentParser owns train's options
            return train.main(argv[1:])
        if argv and argv[0] in COMMANDS and asks_for_help(argv[1:]):
            print(cached_help(argv[0], lambda: _subparser(build_parser(), argv[0]).format_help()), end="")
            raise SystemExit(0)  # as argparse's --help does
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command].run(args)
    except GazeConsError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except (MemoryError, RuntimeError) as error:  # RuntimeError: torch's allocators say so
        if not isinstance(error, MemoryError) and not _out_of_memory(error):
            raise
        print(
            "error: out of memory; lower --batch-size or --image-size (--per_device_train_batch_size, "
            "--image_size for train) or --grid; nothing was written",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written (a training run keeps its checkpoints)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
