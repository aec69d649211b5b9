"""``hf-gazecons train``: fine-tune with the consistency regulariser (also ``scripts/train.py``).

Options are ``TrainingArguments`` plus the regulariser's and :class:`ModelDataArguments`'s, parsed by
``HfArgumentParser``; run it under ``accelerate launch`` for several processes or GPUs.

Building that parser imports torch and transformers (about 10 s on 2 CPU cores), so ``--help`` is
answered from a cache (:mod:`.help_cache`) that any run of ``train`` fills.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..errors import GazeConsError, UsageError, first_line
from .help_cache import asks_for_help, cached_help, store_help


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    commands.add_parser(name, add_help=False, help="fine-tune a model with the regulariser (see train --help)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = [str(a) for a in (argv or [])]
    if asks_for_help(argv):
        print(cached_help("train", lambda: build_parser().format_help()), end="")
        raise SystemExit(0)  # as argparse's --help does
    from ..finetune import train
    from ..formatting import fmt_metric
    from ..run_record import CONSISTENCY

    parser = build_parser()
    store_help("train", parser.format_help())
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
        raise UsageError(first_line(error)) from error
    run = train(data_args, training_args)
    if training_args.process_index == 0:
        results = run.results
        skipped = sum(map(len, results.skipped_images.values()))
        print(
            f"accuracy {fmt_metric(results.metric('accuracy'))}  kappa {fmt_metric(results.metric('kappa'))}  "
            f"L_CAM {fmt_metric(results.metric(CONSISTENCY))}  "
            f"all-zero maps {fmt_metric(results.metric('zero_map_share'), 3)}  "
            + (f"skipped {skipped} unreadable images  " if skipped else "")
            + f"-> {training_args.output_dir}"
        )
    return 0


def build_parser() -> Any:
    """``HfArgumentParser`` over the data/model and training options, with one-line errors."""
    from transformers import HfArgumentParser

    from ..finetune import ModelDataArguments
    from ..trainer import GazeConsistencyTrainingArguments
    from .common import OneLineErrors

    class TrainParser(OneLineErrors, HfArgumentParser):
        pass

    return TrainParser(
        (ModelDataArguments, GazeConsistencyTrainingArguments),
        prog="hf-gazecons train",
        allow_abbrev=False,
        description="Fine-tune an image classifier with the gaze-consistency regulariser (docs/METHOD.md, section 5). "
        "Options are transformers' TrainingArguments (their defaults, where this project changes them, say so) "
        "plus the model, data and regulariser options; --option_name and --option-name are both accepted.",
    )
