"""The study's experiment as one resumable sweep: backbones x lambda_max x seeds (SPEC section 4).

Every run is its own ``hf-gazecons train`` process (``python -m hf_gazecons.cli.main train ...``)
writing into ``OUT/runs/<backbone>/lambda_<value>/seed_<n>/``. On a restart a run whose
``results.json`` exists is skipped, a run with checkpoints but no results resumes from its last
checkpoint, and any other run starts afresh. A failed run keeps its ``train.log``; the sweep goes on
and reports it. At the end of every invocation the tables and pictures are regenerated from *all*
finished runs under ``OUT/runs``:

* ``runs.csv`` - one row per run and epoch (:data:`RUNS_COLUMNS`);
* ``correlation.csv`` - per backbone and lambda, Pearson r(kappa, L_CAM) over epochs for each seed,
  with mean/std over seeds (the study's Table 2 statistic);
* ``curves_<backbone>.png``, ``final_vs_lambda.png`` and ``summary.md``.

Example::

    >>> config = resolve_config({"preset": "smoke", "output_dir": "/tmp/smoke"})
    >>> report = run_sweep(config)
    >>> report.failed
    []
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from queue import Queue
from typing import Any


from .errors import GazeConsError
from .filenames import RESULTS_FILE
from .formatting import fmt_metric
from .jsonio import write_json
from .stats import mean_std, pearson_r

__all__ = [
    "DEFAULTS",
    "PRESETS",
    "RUNS_COLUMNS",
    "SweepConfig",
    "SweepReport",
    "SweepRun",
    "collect_rows",
    "correlation_rows",
    "explicit_command",
    "plan_runs",
    "resolve_config",
    "run_sweep",
    "train_command",
    "write_csv",
    "write_outputs",
]

LOG_FILE = "train.log"

RUNS_COLUMNS = (
    "backbone",
    "lambda",
    "seed",
    "epoch",
    "accuracy",
    "kappa",
    "gaze_consistency",
    "eval_loss",
    "train_loss",
    "penalty",
    "lambda_t",
    "energy_pointing_game",
    "pointing_game",
    "zero_map_share",
    "robust_gaze_consistency",
    "train_zero_map_share",
    "test_accuracy",
    "test_kappa",
    "test_gaze_consistency",
    "test_zero_map_share",
)
"""Columns of ``runs.csv`` (``lambda`` is lambda_max, ``lambda_t`` the epoch's curriculum value).
``gaze_consistency`` is the paper variant's L_CAM, ``robust_gaze_consistency`` the robust one's,
``zero_map_share`` the all-zero maps among the correct validation samples and
``train_zero_map_share`` among the penalised training samples. The ``test_*`` columns hold the
final model's scores on the data set's test split, on each run's last row only."""

_HISTORY_KEYS = {
    "accuracy": "eval_accuracy",
    "kappa": "eval_kappa",
    "gaze_consistency": "eval_gaze_consistency",
    "eval_loss": "eval_loss",
    "train_loss": "train_loss",
    "penalty": "train_penalty",
    "lambda_t": "lambda",
    "energy_pointing_game": "eval_energy_pointing_game",
    "pointing_game": "eval_pointing_game",
    "zero_map_share": "eval_zero_map_share",
    "robust_gaze_consistency": "eval_robust_gaze_consistency",
    "train_zero_map_share": "train_zero_map_share",
}
_TEST_KEYS = {f"test_{m}": f"test_{m}" for m in ("accuracy", "kappa", "gaze_consistency", "zero_map_share")}


@dataclass
class SweepConfig:
    """Everything that defines a sweep (the CLI's options, after the preset is applied)."""

    output_dir: str
    backbones: list[str]
    lambdas: list[float]
    seeds: list[int]
    epochs: int
    t0: int
    t1: int
    dataset: str
    image_size: int | None = None
    grayscale: bool = False
    pretrained: bool = False
    learning_rate: float = 1e-4
    batch_size: int = 32
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    ema_alpha: float = 0.9
    variant: str = "paper"
    target_layer: str | None = None
    train_args: list[str] = field(default_factory=list)
    parallel: int | None = None
    threads: int | None = None
    keep_checkpoints: bool = False
    preset: str | None = None


DEFAULTS: dict[str, Any] = {
    # a CPU-sized ladder of increasing depth on the built-in planted-object data
    "backbones": ["resnet10t", "resnet18", "resnet34"],
    "lambdas": [-100.0, 0.0, 50.0, 100.0, 500.0],
    "seeds": [0, 1, 2],
    "epochs": 10,
    "t0": 2,
    "t1": 5,
    "dataset": "builtin:shapes?size=64&jitter=0.08",
    "image_size": 64,
    "learning_rate": 1e-3,
    "batch_size": 32,
}

PRESETS: dict[str, dict[str, Any]] = {
    # 1-3 minutes on 2 CPU cores: 2 tiny backbones x 2 lambdas x 1 seed x 3 epochs (3 epochs: the
    # kappa-L_CAM correlation is defined)
    "smoke": {
        "backbones": ["test_resnet", "test_efficientnet"],
        "lambdas": [0.0, 100.0],
        "seeds": [0],
        "epochs": 3,
        "t0": 0,
        "t1": 2,
        "dataset": "builtin:shapes?size=64&n_train=24&n_val=8&n_test=1",
        "image_size": 64,
        "learning_rate": 3e-3,
        "batch_size": 16,
        "target_layer": "-2",
        "parallel": 2,
    },
    # the study's regulariser sweep (SPEC section 4): five CNNs of increasing depth, pretrained,
    # grayscale 224 px, Adam 1e-4, batch 32, 50 epochs, T0 2, T1 10, six seeds. Needs GPUs.
    "study": {
        "backbones": ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
        "lambdas": [-100.0, 0.0, 50.0, 100.0, 500.0],
        "seeds": [0, 1, 2, 3, 4, 5],
        "epochs": 50,
        "t0": 2,
        "t1": 10,
        "dataset": "Simezu/brain-tumour-MRI-scan",
        "image_size": 224,
        "grayscale": True,
        "pretrained": True,
        "learning_rate": 1e-4,
        "batch_size": 32,
        "ema_alpha": 0.9,
        "variant": "paper",
    },
    # the CPU sweep of docs/RESULTS.md (small jitter; override --dataset for the large-jitter one);
    # 50 runs of ~30 s, two at a time: about 12-15 minutes on 2 free cores
    "cpu": {
        "backbones": ["test_resnet", "test_efficientnet"],
        "lambdas": [-100.0, 0.0, 50.0, 100.0, 500.0],
        "seeds": [0, 1, 2, 3, 4],
        "epochs": 10,
        "t0": 2,
        "t1": 5,
        "dataset": "builtin:shapes?size=64&jitter=0.05&n_val=50",
        "image_size": 64,
        "learning_rate": 3e-3,
        "batch_size": 32,
        "target_layer": "-2",
        "parallel": 2,
    },
}


def resolve_config(options: Mapping[str, Any]) -> SweepConfig:
    """``options`` (``None`` = not given) over the preset's values over :data:`DEFAULTS`."""
    preset = options.get("preset")
    if preset is not None and preset not in PRESETS:
        raise GazeConsError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values: dict[str, Any] = dict(DEFAULTS)
    values.update(PRESETS.get(preset, {}) if preset else {})
    values.update({k: v for k, v in options.items() if v is not None})
    if not values.get("output_dir"):
        raise GazeConsError("a sweep needs --output-dir")
    known = {f.name for f in fields(SweepConfig)}
    config = SweepConfig(**{k: v for k, v in values.items() if k in known})
    config.lambdas = [float(v) for v in config.lambdas]
    config.seeds = [int(v) for v in config.seeds]
    config.output_dir = str(config.output_dir)
    if not config.backbones or not config.lambdas or not config.seeds:
        raise GazeConsError("a sweep needs at least one backbone, one lambda and one seed")
    if config.epochs < 1:
        raise GazeConsError(f"--epochs must be >= 1, got {config.epochs}")
    if config.parallel is not None and config.parallel < 1:
        raise GazeConsError(f"--parallel must be >= 1, got {config.parallel}")
    return config


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------
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


def format_lambda(value: float) -> str:
    """``100.0`` -> ``"100"``, ``-0.5`` -> ``"-0.5"`` (folder names and tables)."""
    return f"{float(value):g}"


def safe_name(backbone: str) -> str:
    """A backbone spec as one folder name (``hf-hub:org/name`` -> ``hf-hub_org_name``)."""
    return re.sub(r"[^\w.+-]", "_", backbone)


def run_directory(output_dir: str | Path, backbone: str, lambda_max: float, seed: int) -> Path:
    return Path(output_dir) / "runs" / safe_name(backbone) / f"lambda_{format_lambda(lambda_max)}" / f"seed_{seed}"


def plan_runs(config: SweepConfig) -> list[SweepRun]:
    """The grid, backbone-major (then lambda, then seed)."""
    return [
        SweepRun(b, lam, s, run_directory(config.output_dir, b, lam, s))
        for b in config.backbones
        for lam in config.lambdas
        for s in config.seeds
    ]


def last_checkpoint(directory: Path) -> Path | None:
    """The highest ``checkpoint-N`` folder that holds weights, if any."""
    found = []
    for path in directory.glob("checkpoint-*"):
        step = path.name.rpartition("-")[2]
        if (
            path.is_dir()
            and step.isdigit()
            and any(path.glob("*.safetensors"))
            and (path / "trainer_state.json").is_file()
        ):
            found.append((int(step), path))
    return max(found)[1] if found else None


def train_command(run: SweepRun, config: SweepConfig, resume_from: Path | None = None) -> list[str]:
    """The ``hf-gazecons train`` command line of ``run`` (HfArgumentParser ``--snake_case`` options)."""
    command = [
        sys.executable, "-m", "hf_gazecons.cli.main", "train",
        "--model", run.backbone,
        "--dataset", config.dataset,
        "--output_dir", str(run.directory),
        "--lambda_max", format_lambda(run.lambda_max),
        "--seed", str(run.seed),
        "--num_train_epochs", str(config.epochs),
        "--t0", str(config.t0),
        "--t1", str(config.t1),
        "--learning_rate", f"{config.learning_rate:g}",
        "--per_device_train_batch_size", str(config.batch_size),
        "--per_device_eval_batch_size", str(config.batch_size),
        "--ema_alpha", f"{config.ema_alpha:g}",
        "--variant", config.variant,
        "--save_total_limit", "1",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    if config.image_size:
        command += ["--image_size", str(config.image_size)]
    if config.grayscale:
        command += ["--grayscale", "true"]
    if config.pretrained:
        command += ["--pretrained", "true"]
    if config.max_train_samples:
        command += ["--max_train_samples", str(config.max_train_samples)]
    if config.max_eval_samples:
        command += ["--max_eval_samples", str(config.max_eval_samples)]
    if config.target_layer is not None:
        command += ["--target_layer", str(config.target_layer)]
    command += list(config.train_args)
    if resume_from is not None:
        command += ["--resume_from_checkpoint", str(resume_from)]
    else:  # the run folder already holds the sweep's log of this run
        command += ["--overwrite_output_dir", "true"]
    return command


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    run: SweepRun
    status: str  # "skipped", "done", "failed"
    seconds: float = 0.0
    returncode: int | None = None
    message: str = ""


@dataclass
class SweepReport:
    """What one invocation did, and the files it (re)wrote."""

    outcomes: list[RunOutcome]
    outputs: dict[str, Path]
    seconds: float

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _launch(command: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run one training process with its output in ``log_path``; return its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        log.flush()
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode


def _devices(parallel: int | None) -> tuple[int, int]:
    """(runs at once, number of GPUs): default 1 on CPU, one per GPU with CUDA."""
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except (ImportError, RuntimeError):  # pragma: no cover - torch is a dependency
        gpus = 0
    return (parallel or max(1, gpus)), gpus


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _run_env(slot: int, parallel: int, gpus: int, threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = str(threads or max(1, _cpu_count() // parallel))
    if gpus:  # one GPU per run (round-robin over slots), within the GPUs this process may see
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[slot % gpus] if len(visible) >= gpus else str(slot % gpus)
    return env


def run_sweep(
    config: SweepConfig,
    invoked_as: Sequence[str] | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] | None = None,
) -> SweepReport:
    """Run (or resume) every run of the grid, then rewrite the tables and pictures."""
    echo = echo or (lambda line: print(line, flush=True))
    start = time.monotonic()
    out = Path(config.output_dir)
    runs = plan_runs(config)
    parallel, gpus = _devices(config.parallel)
    todo: list[tuple[SweepRun, Path | None]] = []
    outcomes: list[RunOutcome] = []
    for run in runs:
        if run.results_path.is_file():
            outcomes.append(RunOutcome(run, "skipped", message="results.json exists"))
            continue
        todo.append((run, last_checkpoint(run.directory) if run.directory.is_dir() else None))
    resuming = sum(1 for _, ckpt in todo if ckpt is not None)
    where = f"{gpus} GPU(s)" if gpus else f"CPU, {_cpu_count()} core(s)"
    echo(
        f"sweep: {len(runs)} runs ({len(outcomes)} finished, {resuming} to resume, "
        f"{len(todo) - resuming} to start); {parallel} at a time on {where} -> {out}"
    )
    for outcome in outcomes:
        differs = _settings_differ(outcome.run.results_path, config)
        note = f" (WARNING: written with other settings: {differs})" if differs else ""
        echo(f"skip    {outcome.run.name}: results.json exists{note}")
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
        _record_invocation(out, config, invoked_as)
    if dry_run:
        for run, ckpt in todo:
            echo(shlex.join(train_command(run, config, ckpt)))
        return SweepReport(outcomes, {}, time.monotonic() - start)

    slots: Queue[int] = Queue()
    for slot in range(parallel):
        slots.put(slot)
    lock = threading.Lock()
    counter = [0]

    def execute(item: tuple[SweepRun, Path | None]) -> RunOutcome:
        run, ckpt = item
        slot = slots.get()
        try:
            command = train_command(run, config, ckpt)
            run.directory.mkdir(parents=True, exist_ok=True)
            began = time.monotonic()
            with lock:
                verb = f"resume from {ckpt.name}" if ckpt else "start"
                env = _run_env(slot, parallel, gpus, config.threads)
                echo(
                    f"{verb:<7} {run.name}" + (f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})" if gpus else "")
                )
            try:
                code = _launch(command, env, run.log_path)
            except OSError as error:
                code, message = -1, f"could not start: {error}"
            else:
                message = ""
            seconds = time.monotonic() - began
            if code == 0 and run.results_path.is_file():
                if not config.keep_checkpoints:
                    for path in run.directory.glob("checkpoint-*"):
                        shutil.rmtree(path, ignore_errors=True)
                outcome = RunOutcome(run, "done", seconds, code, _final_line(run.results_path))
            else:
                detail = message or (f"killed by signal {-code}" if code < 0 else _log_tail(run.log_path))
                if code == 0:
                    detail = "exited 0 but wrote no results.json"
                outcome = RunOutcome(run, "failed", seconds, code, detail)
            with lock:
                counter[0] += 1
                head = f"[{counter[0]}/{len(todo)}] {run.name}"
                if outcome.status == "done":
                    echo(f"{head}: done in {seconds:.1f} s ({outcome.message})")
                else:
                    echo(
                        f"{head}: FAILED (exit {code}) after {seconds:.1f} s: {outcome.message}\n"
                        f"        log: {run.log_path}"
                    )
            return outcome
        finally:
            slots.put(slot)

    if todo:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            outcomes += list(pool.map(execute, todo))
    outputs = write_outputs(out, config, invoked_as)
    report = SweepReport(outcomes, outputs, time.monotonic() - start)
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    echo(
        f"sweep: {done} trained, {skipped} skipped, {len(report.failed)} failed in {report.seconds:.1f} s; "
        f"summary: {outputs.get('summary', out / 'summary.md')}"
    )
    for outcome in report.failed:
        echo(f"  failed: {outcome.run.name}  (log: {outcome.run.log_path})")
    return report


def _settings_differ(results_path: Path, config: SweepConfig) -> str:
    """What a finished run's ``results.json`` says it was trained with, where that is not ``config``."""
    try:
        saved = json.loads(results_path.read_text()).get("config", {})
    except (OSError, ValueError):
        return "unreadable results.json"
    wanted = {
        "dataset": config.dataset,
        "epochs": float(config.epochs),
        "t0": config.t0,
        "t1": config.t1,
        "learning_rate": config.learning_rate,
        "variant": config.variant,
        "ema_alpha": config.ema_alpha,
    }
    return ", ".join(
        f"{key} {saved[key]!r} != {value!r}" for key, value in wanted.items() if key in saved and saved[key] != value
    )


def _final_line(results_path: Path) -> str:
    try:
        final = json.loads(results_path.read_text()).get("final", {})
    except (OSError, ValueError):
        return "results.json unreadable"
    return (
        f"acc {fmt_metric(final.get('eval_accuracy'))}  kappa {fmt_metric(final.get('eval_kappa'))}  "
        f"L_CAM {fmt_metric(final.get('eval_gaze_consistency'))}"
    )


def _log_tail(log_path: Path, lines: int = 3) -> str:
    try:
        text = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    errors = [line for line in text if line.startswith(("error:", "Traceback")) or "Error" in line.split(":")[0]]
    tail = errors[-1:] if errors else text[-lines:]
    return " | ".join(line.strip() for line in tail)[-300:] or "no output"


def _record_invocation(out: Path, config: SweepConfig, invoked_as: Sequence[str] | None) -> None:
    """Append this invocation (config and command) to ``OUT/sweep.json``."""
    path = out / "sweep.json"
    try:
        history = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        history = []
    history.append(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "invoked_as": list(invoked_as) if invoked_as is not None else None,
            "command": explicit_command(config),
            "config": asdict(config),
        }
    )
    write_json(path, history)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _read_results(out: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((out / "runs").glob(f"**/{RESULTS_FILE}")):
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        config = results.get("config", {})
        if "model" not in config or "lambda_max" not in config or "seed" not in config:
            continue
        results["_path"] = path
        found.append(results)
    return found


def collect_rows(out: str | Path, backbone_order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per finished run and epoch (:data:`RUNS_COLUMNS`), from every ``results.json``."""
    rows = []
    for results in _read_results(Path(out)):
        config = results["config"]
        history = results.get("history", [])
        for entry in history:
            row: dict[str, Any] = {
                "backbone": config["model"],
                "lambda": float(config["lambda_max"]),
                "seed": int(config["seed"]),
                "epoch": entry["epoch"],
            }
            for column, key in _HISTORY_KEYS.items():
                row[column] = entry.get(key)
            if entry is history[-1]:
                for column, key in _TEST_KEYS.items():
                    row[column] = (results.get("final_test") or {}).get(key)
            rows.append(row)
    order = {name: i for i, name in enumerate(backbone_order)}
    rows.sort(key=lambda r: (order.get(r["backbone"], len(order)), r["backbone"], r["lambda"], r["seed"], r["epoch"]))
    return rows


def _groups(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, float], dict[int, list[Mapping[str, Any]]]]:
    """(backbone, lambda) -> seed -> that run's rows in epoch order (insertion order kept)."""
    groups: dict[tuple[str, float], dict[int, list[Mapping[str, Any]]]] = {}
    for row in rows:
        groups.setdefault((row["backbone"], float(row["lambda"])), {}).setdefault(int(row["seed"]), []).append(row)
    for by_seed in groups.values():
        for seed_rows in by_seed.values():
            seed_rows.sort(key=lambda r: r["epoch"])
    return groups


def correlation_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Per (backbone, lambda): Pearson r(kappa, L_CAM) over epochs for each seed, and mean/std over seeds.

    Returns the rows and the seeds that have a column (``r_seed_<n>``). A seed whose r is undefined
    (fewer than 3 epochs with both values, or a constant series) is left empty and not counted.
    """

    groups = _groups(rows)
    seeds = sorted({seed for by_seed in groups.values() for seed in by_seed})
    table = []
    for (backbone, lam), by_seed in groups.items():
        row: dict[str, Any] = {"backbone": backbone, "lambda": lam}
        values = []
        for seed in seeds:
            r = None
            if seed in by_seed:
                r = pearson_r([x["kappa"] for x in by_seed[seed]], [x["gaze_consistency"] for x in by_seed[seed]])
            row[f"r_seed_{seed}"] = r
            values.append(r)
        row["pearson_r_mean"], row["pearson_r_std"], row["n_seeds"] = mean_std(values)
        table.append(row)
    return table, seeds


_FINAL_METRICS = (
    "accuracy",
    "kappa",
    "gaze_consistency",
    "robust_gaze_consistency",
    "zero_map_share",
    "energy_pointing_game",
    "pointing_game",
    *_TEST_KEYS,
)


def final_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (backbone, lambda): the last epoch's metrics, mean/std over seeds."""
    table = []
    for (backbone, lam), by_seed in _groups(rows).items():
        last = [seed_rows[-1] for seed_rows in by_seed.values()]
        row: dict[str, Any] = {
            "backbone": backbone,
            "lambda": lam,
            "n_seeds": len(last),
            "epochs": max(r["epoch"] for r in last),
        }
        for metric in _FINAL_METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"], _ = mean_std(r.get(metric) for r in last)
        table.append(row)
    return table


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.6e}"
    return value


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """A CSV of ``rows`` (missing values empty, floats to 6 significant digits, lambdas as in folder names)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) if c != "lambda" else format_lambda(row[c]) for c in columns])
    return path


def write_outputs(
    out: str | Path, config: SweepConfig | None = None, invoked_as: Sequence[str] | None = None
) -> dict[str, Path]:
    """Regenerate ``runs.csv``, ``correlation.csv``, the pictures and ``summary.md`` from ``OUT/runs``."""
    from .plots import plot_sweep_curves, plot_sweep_finals

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect_rows(out, config.backbones if config else ())
    outputs = {"runs": write_csv(out / "runs.csv", RUNS_COLUMNS, rows)}
    correlation, seeds = correlation_rows(rows)
    columns = ["backbone", "lambda", *[f"r_seed_{s}" for s in seeds], "pearson_r_mean", "pearson_r_std", "n_seeds"]
    outputs["correlation"] = write_csv(out / "correlation.csv", columns, correlation)
    finals = final_rows(rows)
    pictures: list[Path] = []
    if rows:
        backbones = list(dict.fromkeys(r["backbone"] for r in rows))
        for backbone in backbones:
            path = out / f"curves_{safe_name(backbone)}.png"
            plot_sweep_curves([r for r in rows if r["backbone"] == backbone], path, title=backbone)
            pictures.append(path)
        pictures.append(plot_sweep_finals(rows, out / "final_vs_lambda.png"))
    summary = _summary(out, config, invoked_as, rows, finals, correlation, pictures)
    outputs["summary"] = out / "summary.md"
    outputs["summary"].write_text(summary)
    for i, path in enumerate(pictures):
        outputs[f"picture_{i}"] = path
    return outputs


def _pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _summary(
    out: Path,
    config: SweepConfig | None,
    invoked_as: Sequence[str] | None,
    rows: Sequence[Mapping[str, Any]],
    finals: Sequence[Mapping[str, Any]],
    correlation: Sequence[Mapping[str, Any]],
    pictures: Sequence[Path],
) -> str:
    n_runs = len({(r["backbone"], r["lambda"], r["seed"]) for r in rows})
    lines = ["# Gaze-consistency sweep", ""]
    lines += [
        (
            f"{n_runs} finished runs under `{out / 'runs'}` (mean ± sample std over seeds; "
            "final = last epoch's evaluation)."
        ),
        "",
    ]
    if config is not None:
        lines += [
            "Command (all options explicit; re-running it skips finished runs):",
            "",
            "```",
            explicit_command(config),
            "```",
            "",
        ]
        if invoked_as is not None:
            lines += ["Invoked as: `" + shlex.join(["hf-gazecons", "sweep", *invoked_as]) + "`", ""]
        lines += [
            (
                f"Data `{config.dataset}`, {config.epochs} epochs, T0 {config.t0}, T1 {config.t1}, "
                f"lr {config.learning_rate:g}, batch {config.batch_size}, "
                f"image size {config.image_size or 'model default'}, "
                f"target layer {config.target_layer or 'default'}, variant {config.variant}."
            ),
            "",
        ]
    has_masks = any(f.get("energy_pointing_game_mean") is not None for f in finals)
    has_test = any(f.get("test_accuracy_mean") is not None for f in finals)
    lines += ["## Final evaluation", ""]
    lines += [
        "Validation split. L_CAM is the paper variant's, robust L_CAM the cosine variant's; all-zero maps "
        "are the share of correct validation samples whose Grad-CAM map is zero everywhere.",
        "",
    ]
    head = ["backbone", "lambda", "seeds", "accuracy", "kappa", "L_CAM", "robust L_CAM", "all-zero maps"]
    if has_masks:
        head += ["energy pointing game", "pointing game"]
    if has_test:
        head += ["test accuracy", "test L_CAM"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in finals:
        cells = [
            f"`{f['backbone']}`",
            format_lambda(f["lambda"]),
            str(f["n_seeds"]),
            _pm(f["accuracy_mean"], f["accuracy_std"]),
            _pm(f["kappa_mean"], f["kappa_std"]),
            _pm(f["gaze_consistency_mean"], f["gaze_consistency_std"], 4),
            _pm(f["robust_gaze_consistency_mean"], f["robust_gaze_consistency_std"]),
            _pm(f["zero_map_share_mean"], f["zero_map_share_std"]),
        ]
        if has_masks:
            cells += [
                _pm(f["energy_pointing_game_mean"], f["energy_pointing_game_std"]),
                _pm(f["pointing_game_mean"], f["pointing_game_std"]),
            ]
        if has_test:
            cells += [
                _pm(f["test_accuracy_mean"], f["test_accuracy_std"]),
                _pm(f["test_gaze_consistency_mean"], f["test_gaze_consistency_std"], 4),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Pearson r between kappa and L_CAM over epochs (the study's Table 2 statistic)", ""]
    lines += ["| backbone | lambda | r (mean ± std over seeds) | seeds |", "|---|---|---|---|"]
    for c in correlation:
        lines.append(
            f"| `{c['backbone']}` | {format_lambda(c['lambda'])} | "
            f"{_pm(c['pearson_r_mean'], c['pearson_r_std'])} | {c['n_seeds']} |"
        )
    sanity = out / "sanity_summary.csv"
    if sanity.is_file():
        lines += ["", "## Sanity check: cascading randomization (Spearman, original vs randomised map)", ""]
        with open(sanity) as handle:
            table = list(csv.DictReader(handle))
        lines += [
            (
                "Mean over runs of each run's mean Spearman correlation (over its samples) between the "
                "original and the cumulatively re-initialised model's map; step 0 is the unchanged model. "
                "Constant maps (no ranking) are left out of the correlation and counted separately."
            ),
            "",
        ]
        lines += [
            (
                "| backbone | lambda | randomized up to | Spearman (mean ± std over runs) | runs | "
                "constant maps (original / randomised) |"
            ),
            "|---|---|---|---|---|---|",
        ]
        for r in table:
            mean = float(r["spearman_mean"]) if r.get("spearman_mean") else None
            std = float(r["spearman_std"]) if r.get("spearman_std") else None
            constant = " / ".join(
                f"{float(r[k]):.0%}" if r.get(k) else "n/a" for k in ("constant_original", "constant_randomized")
            )
            lines.append(
                f"| `{r['backbone']}` | {r['lambda']} | {r['randomized_up_to']} | {_pm(mean, std)} | "
                f"{r['n_runs']} | {constant} |"
            )
    if pictures:
        lines += ["", "## Pictures", ""]
        lines += [f"![{p.stem}]({p.name})" for p in pictures]
    lines += ["", "Files: `runs.csv` (per run and epoch), `correlation.csv`, `sweep.json` (every invocation)."]
    return "\n".join(lines) + "\n"


def explicit_command(config: SweepConfig) -> str:
    """An ``hf-gazecons sweep`` command line with every option spelled out (no preset needed)."""
    parts = ["hf-gazecons", "sweep",
             "--backbones", *config.backbones,
             "--lambdas", *[format_lambda(v) for v in config.lambdas],
             "--seeds", *[str(s) for s in config.seeds],
             "--epochs", str(config.epochs), "--t0", str(config.t0), "--t1", str(config.t1),
             "--dataset", config.dataset,
             "--learning-rate", f"{config.learning_rate:g}", "--batch-size", str(config.batch_size),
             "--ema-alpha", f"{config.ema_alpha:g}", "--variant", config.variant]  # fmt: skip
    if config.image_size:
        parts += ["--image-size", str(config.image_size)]
    if config.grayscale:
        parts += ["--grayscale"]
    if config.pretrained:
        parts += ["--pretrained"]
    if config.max_train_samples:
        parts += ["--max-train-samples", str(config.max_train_samples)]
    if config.max_eval_samples:
        parts += ["--max-eval-samples", str(config.max_eval_samples)]
    if config.target_layer is not None:
        parts += [f"--target-layer={config.target_layer}"]
    if config.train_args:
        parts += [f"--train-args={shlex.join(config.train_args)}"]
    if config.parallel:
        parts += ["--parallel", str(config.parallel)]
    if config.threads:
        parts += ["--threads", str(config.threads)]
    if config.keep_checkpoints:
        parts += ["--keep-checkpoints"]
    parts += ["--output-dir", config.output_dir]
    return shlex.join(parts)
