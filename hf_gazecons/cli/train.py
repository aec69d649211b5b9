"""``hf-gazecons train``: fine-tune with the consistency regulariser (also ``scripts/train.py``).

Options are ``TrainingArguments`` plus the regulariser's and :class:`ModelDataArguments`'s, parsed by
``HfArgumentParser``; run it under ``accelerate launch`` for several processes or GPUs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    commands.add_parser(name, add_help=False, help="fine-tune a model with the regulariser (see train --help)")


def main(argv: Sequence[str] | None = None) -> int:
    from transformers import HfArgumentParser

    from ..formatting import fmt_metric
    from ..trainer import GazeConsistencyTrainingArguments
    from ..training import ModelDataArguments, train

    parser = HfArgumentParser((ModelDataArguments, GazeConsistencyTrainingArguments), prog="hf-gazecons train")
    data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    run = train(data_args, training_args)
    if training_args.process_index == 0:
        final = run.results["final"]
        print(
            f"accuracy {final['eval_accuracy']:.4f}  kappa {final['eval_kappa']:.4f}  "
            f"L_CAM {fmt_metric(final['eval_gaze_consistency'])}  -> {training_args.output_dir}"
        )
    return 0
