"""The study's experiment as one resumable sweep: backbones x lambda_max x seeds (the thesis's regulariser sweep).

Every run is its own ``hf-gazecons train`` process writing into
``OUT/runs/<backbone>/lambda_<value>/seed_<n>/``; finished runs are skipped on a restart and
interrupted ones resume from their last checkpoint. The modules:

* :mod:`~hf_gazecons.sweep.config` — :class:`SweepConfig`, the defaults and presets, the command
  that reproduces a sweep;
* :mod:`~hf_gazecons.sweep.plan` — the runs, their folders, the shards and each run's ``train``
  command;
* :mod:`~hf_gazecons.sweep.runner` — the processes (some at once, one GPU each);
* :mod:`~hf_gazecons.sweep.tables` — the numbers: one row per run and epoch, the last epoch's
  mean ± sd over seeds, the correlations; :mod:`~hf_gazecons.sweep.report` — ``runs.csv``,
  ``correlation.csv``, the pictures and ``summary.md``; :mod:`~hf_gazecons.sweep.sanity` — the
  randomisation check on every run.

Across machines, ``--shard K/N`` trains every N-th run and writes no table, and ``--collect``
builds the tables from all shards' runs afterwards.

Example::

    >>> config = resolve_config({"preset": "smoke", "output_dir": "/tmp/smoke"})
    >>> report = run_sweep(config)
    >>> report.failed
    []
"""

from .config import DEFAULTS, PRESETS, SweepConfig, explicit_command, format_lambda, recorded_config, resolve_config
from .files import write_csv
from .plan import Shard, SweepRun, plan_runs, run_directory, train_command
from .report import write_outputs
from .runner import SweepReport, run_sweep
from .sanity import sanity_sweep
from .tables import RUNS_COLUMNS, collect_rows, correlation_rows, final_rows

__all__ = [
    "DEFAULTS",
    "PRESETS",
    "RUNS_COLUMNS",
    "Shard",
    "SweepConfig",
    "SweepReport",
    "SweepRun",
    "collect_rows",
    "correlation_rows",
    "explicit_command",
    "final_rows",
    "format_lambda",
    "plan_runs",
    "recorded_config",
    "resolve_config",
    "run_directory",
    "run_sweep",
    "sanity_sweep",
    "train_command",
    "write_csv",
    "write_outputs",
]
