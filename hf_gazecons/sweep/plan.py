"""Which runs a sweep has, where each writes, which shard trains it, and its ``train`` command.

>>> runs = plan_runs(config)                      # backbone-major, then lambda, then seed
>>> Shard.parse("2/4").select(runs)               # every 4th run, starting with the second
>>> train_command(runs[0], config)[:4]
['/usr/bin/python3', '-m', 'hf_gazecons.cli.main', 'train']
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..filenames import RESULTS_FILE
from ..formatting import fmt_exact
from .config import SweepConfig, format_lambda

__all__ = ["LOG_FILE", "RUNS_DIR", "Shard", "SweepRun", "plan_runs", "run_directory", "safe_name", "train_command"]

RUNS_DIR = "runs"
LOG_FILE = "train.log"
"""Each run's output (stdout and stderr of its ``train`` process), kept beside its results."""


@dataclass
class SweepRun:
    """One training run of the grid and where it writes."""

    backbone: str
    lambda_max: float
    seed: int
    directory: Path

    @property
    def name(self) -> str:
        return f"{self.backbone} lambda={format_lambda(self.lambda_max)} seed={self.seed}"

    @property
    def results_path(self) -> Path:
        return self.directory / RESULTS_FILE

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``: the runs ``index - 1, index - 1 + count, ...`` of the plan.

    N machines (or the N tasks of a SLURM job array) that each run one shard train disjoint runs
    into disjoint folders of one output directory, without talking to each other."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` with ``1 <= K <= N``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise UsageError(f"a shard is K/N with 1 <= K <= N (e.g. 2/4), not {text!r}")
        return cls(int(match[1]), int(match[2]))

    def select(self, runs: list[SweepRun]) -> list[SweepRun]:
        return runs[self.index - 1 :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def safe_name(backbone: str) -> str:
    """A backbone spec as one folder name (``hf-hub:org/name`` -> ``hf-hub_org_name``)."""
    return re.sub(r"[^\w.+-]", "_", backbone)


def run_directory(output_dir: str | Path, backbone: str, lambda_max: float, seed: int) -> Path:
    """``OUT/runs/<backbone>/lambda_<value>/seed_<n>``."""
    return Path(output_dir) / RUNS_DIR / safe_name(backbone) / f"lambda_{format_lambda(lambda_max)}" / f"seed_{seed}"


def plan_runs(config: SweepConfig) -> list[SweepRun]:
    """The grid, backbone-major (then lambda, then seed)."""
    return [
        SweepRun(b, lam, s, run_directory(config.output_dir, b, lam, s))
        for b in config.backbones
        for lam in config.lambdas
        for s in config.seeds
    ]


def train_options(run: SweepRun, config: SweepConfig) -> dict[str, Any]:
    """The ``hf-gazecons train`` options of ``run`` (``None``: not given, the train default)."""
    return {
        "model": run.backbone,
        "dataset": config.dataset,
        "output_dir": run.directory,
        "lambda_max": format_lambda(run.lambda_max),
        "seed": run.seed,
        "num_train_epochs": config.epochs,
        "t0": config.t0,
        "t1": config.t1,
        "learning_rate": fmt_exact(config.learning_rate),
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "ema_alpha": fmt_exact(config.ema_alpha),
        "variant": config.variant,
        "save_total_limit": 1,
        "disable_tqdm": True,
        "image_size": config.image_size or None,
        "grayscale": config.grayscale or None,
        "pretrained": config.pretrained or None,
        "max_train_samples": config.max_train_samples or None,
        "max_eval_samples": config.max_eval_samples or None,
        "target_layer": config.target_layer,
        "cam_method": config.cam_method,
        "per_sample": config.per_sample,
    }


def train_command(run: SweepRun, config: SweepConfig, resume_from: Path | None = None) -> list[str]:
    """The ``hf-gazecons train`` command line of ``run``: :func:`train_options` as
    ``HfArgumentParser``'s ``--snake_case`` options, then ``config.train_args``, then how to start:
    from ``resume_from``, or afresh over the run folder (which already holds the sweep's log)."""
    start = {"resume_from_checkpoint": resume_from} if resume_from is not None else {"overwrite_output_dir": True}
    return [
        sys.executable, "-m", "hf_gazecons.cli.main", "train",
        *_argv(train_options(run, config)), *config.train_args, *_argv(start),
    ]  # fmt: skip


def _argv(options: dict[str, Any]) -> list[str]:
    argv = []
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv
