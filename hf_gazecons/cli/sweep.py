"""``hf-gazecons sweep``: the study's backbones x lambda_max x seeds experiment as one resumable command.

Each run is its own ``hf-gazecons train`` process writing into
``OUT/runs/<backbone>/lambda_<value>/seed_<n>/``; finished runs are skipped on a restart, interrupted
ones resume from their last checkpoint. ``OUT/summary.md``, ``runs.csv``, ``correlation.csv`` and
the pictures are rewritten from all finished runs at the end. See :mod:`hf_gazecons.sweep`.

    hf-gazecons sweep --preset smoke --output-dir /tmp/smoke
    hf-gazecons sweep --preset study --output-dir out-study          # the study's setting (GPUs)
    hf-gazecons sweep --preset cpu --seeds 0 1 2 --output-dir out-cpu --sanity
    hf-gazecons sweep --preset study --shard 2/4 --output-dir shared/out   # one of 4 machines
    hf-gazecons sweep --collect --output-dir shared/out                     # then the tables
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields

from ..errors import UsageError
from ..formatting import fmt_exact
from ..output_dir import check_output_dir
from ..per_sample_modes import PER_SAMPLE_HELP, PER_SAMPLE_MODES
from ..sweep import (
    DEFAULTS,
    PRESETS,
    Shard,
    SweepConfig,
    format_lambda,
    recorded_config,
    resolve_config,
    run_sweep,
    sanity_sweep,
    write_outputs,
)
from ..variants import DEFAULT_VARIANT
from .common import add_cam_method_option, add_variant_option


def add_parser(commands: argparse._SubParsersAction, name: str) -> None:
    presets = "; ".join(
        f"{key}: {', '.join(v['backbones'])} x lambda {' '.join(f'{x:g}' for x in v['lambdas'])} x "
        f"{len(v['seeds'])} seed(s), {v['epochs']} epochs"
        for key, v in PRESETS.items()
    )
    parser = commands.add_parser(
        name,
        help="run the study's backbones x lambda x seeds sweep (resumable), with tables and pictures",
        description=(
            "Train every backbone x lambda_max x seed, each in its own `hf-gazecons train` process, into "
            "OUT/runs/<backbone>/lambda_<v>/seed_<n>/; skip finished runs, resume interrupted ones; write "
            "runs.csv, correlation.csv (Pearson r of kappa and L_CAM over epochs), pictures and summary.md. "
            "A preset sets defaults; explicit options override it. Presets: " + presets + "."
        ),
    )
    _add_grid_options(parser)
    _add_training_options(parser)
    _add_running_options(parser)


def _add_grid_options(parser: argparse.ArgumentParser) -> None:
    """The preset, the folder and the grid: backbones x lambdas x seeds, and the curriculum."""
    d = DEFAULTS
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="named defaults (see above)")
    parser.add_argument(
        "--output-dir", required=True, help="sweep folder (runs/, tables, pictures); an existing one is resumed"
    )
    parser.add_argument("--backbones", nargs="+", default=None, help=f"timm names (default {' '.join(d['backbones'])})")
    lambdas = " ".join(format_lambda(x) for x in d["lambdas"])
    parser.add_argument("--lambdas", nargs="+", default=None, help=f"lambda_max values (default {lambdas})")
    parser.add_argument("--seeds", nargs="+", default=None, help=f"seeds (default {d['seeds']})")
    parser.add_argument("--epochs", default=None, help=f"epochs per run (default {d['epochs']})")
    parser.add_argument("--t0", default=None, help=f"lambda is 0 up to this epoch (default {d['t0']})")
    parser.add_argument("--t1", default=None, help=f"lambda reaches lambda_max here (default {d['t1']})")
    parser.add_argument("--dataset", default=None, help=f"builtin:..., Hub id or folder (default {d['dataset']})")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """What each run's ``hf-gazecons train`` gets."""
    d = DEFAULTS
    parser.add_argument("--image-size", default=None, help=f"square input size (default {d['image_size']})")
    for option, what in (
        ("--grayscale", "1-channel input, mean/std 0.5, the study's"),
        ("--pretrained", "start from timm's pretrained weights, which must be reachable"),
    ):
        parser.add_argument(
            option, nargs="?", const=True, default=None, help=f"{what} (default: the preset's, else false)"
        )
    parser.add_argument("--learning-rate", default=None, help=f"(default {fmt_exact(d['learning_rate'])})")
    parser.add_argument("--batch-size", default=None, help=f"per device (default {d['batch_size']})")
    for option, what in (("--max-train-samples", "training"), ("--max-eval-samples", "evaluation")):
        parser.add_argument(option, default=None, help=f"use at most this many {what} samples (default: all)")
    parser.add_argument("--ema-alpha", default=None, help="EMA factor of the class maps (default 0.9)")
    add_variant_option(parser, None, f"the preset's, else {DEFAULT_VARIANT}")
    add_cam_method_option(parser, training=True)
    parser.add_argument(
        "--target-layer",
        default=None,
        help="Grad-CAM target: module name or timm stage index; write --target-layer=-2 for negatives "
        "(default: the preset's, else the model's last spatial map)",
    )
    parser.add_argument(
        "--per-sample",
        choices=PER_SAMPLE_MODES,
        default=None,
        help=f"{PER_SAMPLE_HELP} (default: the preset's, else held_stats)",
    )
    parser.add_argument(
        "--train-args",
        default=None,
        help="more `hf-gazecons train` options, one quoted string, e.g. '--second_order true' (default: none)",
    )


def _add_running_options(parser: argparse.ArgumentParser) -> None:
    """How the runs are run, and what is done besides (the sanity check, shards, collecting)."""
    parser.add_argument(
        "--parallel",
        default=None,
        help="runs at once (default: 1 on CPU, the number of GPUs with CUDA; one GPU per run)",
    )
    parser.add_argument("--threads", default=None, help="OMP_NUM_THREADS per run (default: CPU cores / --parallel)")
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        default=None,
        help="keep checkpoint-N folders of finished runs (default: delete them)",
    )
    parser.add_argument(
        "--sanity",
        action="store_true",
        help="afterwards, run the cascading-randomization check on every finished run (sanity.csv)",
    )
    parser.add_argument("--sanity-samples", default=64, help="evaluation samples per run for --sanity")
    parser.add_argument("--dry-run", action="store_true", help="print the training commands and stop")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="write no report.html of the sweep (each run writes its own unless --train-args '--no_report')",
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="K/N",
        help="train only shard K of N (every N-th run, from the K-th), e.g. one per machine or SLURM array task; "
        "shards write disjoint run folders and no tables (default: the whole grid)",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: build the tables, pictures and summary.md (and, with --sanity, the sanity check) "
        "from the finished runs in --output-dir, e.g. after all shards are done; the grid's options are the "
        "recorded ones",
    )


def run(args: argparse.Namespace) -> int:
    if args.collect:
        return _collect(args)
    options = {f.name: getattr(args, f.name) for f in fields(SweepConfig)}
    if args.train_args is not None:
        options["train_args"] = shlex.split(args.train_args)
    config = resolve_config(options)  # checks every value (hf_gazecons.checks) and the curriculum
    check_output_dir(config.output_dir, must_be_empty=False)
    invoked_as = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "sweep" else None
    report = run_sweep(config, invoked_as=invoked_as, dry_run=args.dry_run, shard=args.shard)
    if args.sanity and not args.dry_run and args.shard is None:
        sanity_sweep(config.output_dir, max_samples=args.sanity_samples)  # each run's own Grad-CAM layer
        write_outputs(config.output_dir, config, invoked_as)
    if not (args.no_report or args.dry_run or args.shard is not None):
        _write_report(config.output_dir)
    return report.exit_code


def _write_report(output_dir: str) -> None:
    from ..report import write_report

    print(f"wrote {write_report(output_dir)}")


def _collect(args: argparse.Namespace) -> int:
    """``--collect``: the tables (and the sanity check) of the runs already in ``--output-dir``."""
    if args.shard is not None or args.dry_run:
        raise UsageError("--collect trains nothing: it takes no --shard or --dry-run")
    check_output_dir(args.output_dir, must_be_empty=False)
    config = recorded_config(args.output_dir)
    if args.sanity:
        sanity_sweep(args.output_dir, max_samples=args.sanity_samples)
    outputs = write_outputs(args.output_dir, config)
    print(f"collected the finished runs of {args.output_dir}: {outputs['summary']}")
    if not args.no_report:
        _write_report(args.output_dir)
    return 0


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
