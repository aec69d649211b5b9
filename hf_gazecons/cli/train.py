"""``hf-gazecons train``: fine-tune with the consistency regulariser (also ``scripts/train.py``).

Options are ``TrainingArguments`` plus the regulariser's and :class:`ModelDataArguments`'s, parsed by
``HfArgumentParser``; run it under ``accelerate launch`` for several processes or GPUs.

Building that parser imports torch and transformers (about 10 s on 2 CPU cores), so ``--help`` is
answered from a cache (:func:`help_text`) that any run of ``train`` fills: one file per version of
this package's source, of transformers and of Python, and per terminal width.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import GazeConsError, UsageError

_PACKAGE = Path(__file__).resolve().parents[1]


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    commands.add_parser(name, add_help=False, help="fine-tune a model with the regulariser (see train --help)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = [str(a) for a in (argv or [])]
    if _asks_for_help(argv):
        print(help_text(), end="")
        raise SystemExit(0)  # as argparse's --help does
    from ..formatting import fmt_metric
    from ..training import train

    parser = build_parser()
    _store_help(parser)
    given, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if given.output_dir is None:  # transformers would write into ./trainer_output
        parser.error("the following arguments are required: --output_dir")
    try:
        data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except GazeConsError:
        raise
    except ValueError as error:  # TrainingArguments' own checks of option combinations
        raise UsageError(_first_line(error)) from error
    run = train(data_args, training_args)
    if training_args.process_index == 0:
        final = run.results["final"]
        print(
            f"accuracy {fmt_metric(final['eval_accuracy'])}  kappa {fmt_metric(final['eval_kappa'])}  "
            f"L_CAM {fmt_metric(final['eval_gaze_consistency'])}  -> {training_args.output_dir}"
        )
    return 0


def build_parser() -> Any:
    """``HfArgumentParser`` over the data/model and training options, with one-line errors."""
    from transformers import HfArgumentParser

    from ..trainer import GazeConsistencyTrainingArguments
    from ..training import ModelDataArguments
    from .common import OneLineErrors

    class TrainParser(OneLineErrors, HfArgumentParser):
        pass

    return TrainParser(
        (ModelDataArguments, GazeConsistencyTrainingArguments),
        prog="hf-gazecons train",
        allow_abbrev=False,
        description="Fine-tune an image classifier with the gaze-consistency regulariser (SPEC section 3). "
        "Options are transformers' TrainingArguments (their defaults, where this project changes them, say so) "
        "plus the model, data and regulariser options; --option_name and --option-name are both accepted.",
    )


def help_text() -> str:
    """``train --help``: from the cache, or built (and cached) when there is none for this version."""
    path = _help_path()
    try:
        return path.read_text()
    except OSError:
        text = build_parser().format_help()
        _write(path, text)
        return text


def _store_help(parser: Any) -> None:
    """Cache the help of the parser a run built anyway (one process only, never failing the run)."""
    if os.environ.get("RANK", "0") == "0" and not _help_path().is_file():
        _write(_help_path(), parser.format_help())


def _help_path() -> Path:
    digest = hashlib.sha256()
    for part in (_version("transformers"), platform.python_version(), str(shutil.get_terminal_size().columns)):
        digest.update(part.encode() + b"\0")
    for source in sorted(_PACKAGE.rglob("*.py")):
        digest.update(source.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hf_gazecons"
    return cache / f"train-help-{digest.hexdigest()[:16]}.txt"


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob("train-help-*.txt"):
            stale.unlink(missing_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as file:
            file.write(text)
        os.replace(file.name, path)
    except OSError:  # a read-only home: the help is still printed, only not cached
        pass


def _asks_for_help(argv: list[str]) -> bool:
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "-h" in options or "--help" in options


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]
