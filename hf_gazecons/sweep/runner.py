"""Running a sweep: one ``hf-gazecons train`` process per run, some at once, one GPU each.

A run whose ``results.json`` exists is skipped, a run with a complete checkpoint resumes from it,
any other starts afresh; a failed run keeps its ``train.log`` and the sweep goes on. With a
:class:`~hf_gazecons.sweep.plan.Shard` only that shard's runs are trained and no table is written
(several shards may run at once on other machines): ``hf-gazecons sweep --collect`` builds them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Queue

from ..errors import DataError
from ..formatting import fmt_metric
from ..jsonio import write_json
from ..output_dir import last_checkpoint
from ..run_record import CONSISTENCY, RunResults
from .config import SweepConfig, explicit_command
from .plan import Shard, SweepRun, plan_runs, train_command
from .report import write_outputs

__all__ = ["RunOutcome", "SweepReport", "invocation_file", "run_sweep"]


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
    shard: Shard | None = None,
) -> SweepReport:
    """Run (or resume) every run of the grid (or of ``shard``), then rewrite the tables and pictures
    (not for a shard: its siblings may still be running; ``--collect`` writes them).

    Args:
        config: the grid and its training options (:func:`~hf_gazecons.sweep.config.resolve_config`).
        invoked_as: the command line as typed, recorded beside the explicit one.
        dry_run: print the ``train`` commands and stop.
        echo: where progress lines go (default: stdout).
        shard: train only this shard's runs.

    Returns:
        A :class:`SweepReport`; its ``exit_code`` is 1 if any run failed.

    Example::

        >>> report = run_sweep(resolve_config({"preset": "smoke", "output_dir": "/tmp/smoke"}))
        >>> report.exit_code, report.outputs["summary"]
        (0, PosixPath('/tmp/smoke/summary.md'))
    """
    echo = echo or (lambda line: print(line, flush=True))
    start = time.monotonic()
    out = Path(config.output_dir)
    runs = plan_runs(config) if shard is None else shard.select(plan_runs(config))
    skipped = [RunOutcome(run, "skipped", message="results.json exists") for run in runs if run.results_path.is_file()]
    todo = [(run, last_checkpoint(run.directory)) for run in runs if not run.results_path.is_file()]
    parallel, gpus = _devices(config.parallel)
    _announce(echo, config, shard, len(runs), skipped, todo, parallel, gpus)
    if dry_run:
        for run, checkpoint in todo:
            echo(shlex.join(train_command(run, config, checkpoint)))
        return SweepReport(skipped, {}, time.monotonic() - start)
    out.mkdir(parents=True, exist_ok=True)
    _record_invocation(out, config, invoked_as, shard)
    trained = _Trainer(config, parallel, gpus, echo, len(todo)).train_all(todo)
    outputs = write_outputs(out, config, invoked_as) if shard is None else {}
    report = SweepReport([*skipped, *trained], outputs, time.monotonic() - start)
    _close(echo, report, shard, out)
    return report


def _announce(
    echo: Callable[[str], None],
    config: SweepConfig,
    shard: Shard | None,
    n_runs: int,
    skipped: list[RunOutcome],
    todo: list[tuple[SweepRun, Path | None]],
    parallel: int,
    gpus: int,
) -> None:
    """What the sweep will do, and each finished run it skips (warning where its settings differ)."""
    resuming = sum(1 for _, checkpoint in todo if checkpoint is not None)
    where = f"{gpus} GPU(s)" if gpus else f"CPU, {_cpu_count()} core(s)"
    part = f"shard {shard}: " if shard else ""
    echo(
        f"sweep: {part}{n_runs} runs ({len(skipped)} finished, {resuming} to resume, "
        f"{len(todo) - resuming} to start); {parallel} at a time on {where} -> {Path(config.output_dir)}"
    )
    for outcome in skipped:
        differs = _settings_differ(outcome.run.results_path, config)
        note = f" (WARNING: written with other settings: {differs})" if differs else ""
        echo(f"skip    {outcome.run.name}: results.json exists{note}")


def _close(echo: Callable[[str], None], report: SweepReport, shard: Shard | None, out: Path) -> None:
    """The sweep's last lines: what it did, where the summary is (or how to collect the shards), what failed."""
    done = sum(o.status == "done" for o in report.outcomes)
    skipped = sum(o.status == "skipped" for o in report.outcomes)
    then = (
        f"summary: {report.outputs['summary']}"
        if shard is None
        else f"once every shard is done: hf-gazecons sweep --collect --output-dir {shlex.quote(str(out))}"
    )
    part = f"shard {shard}: " if shard else ""
    echo(
        f"sweep: {part}{done} trained, {skipped} skipped, {len(report.failed)} failed in {report.seconds:.1f} s; "
        + then
    )
    for outcome in report.failed:
        echo(f"  failed: {outcome.run.name}  (log: {outcome.run.log_path})")


class _Trainer:
    """Trains runs, ``parallel`` at a time, each in its slot (one GPU per slot where there are GPUs)."""

    def __init__(
        self, config: SweepConfig, parallel: int, gpus: int, echo: Callable[[str], None], total: int
    ) -> None:
        self.config, self.parallel, self.gpus, self.echo, self.total = config, parallel, gpus, echo, total
        self.slots: Queue[int] = Queue()
        for slot in range(parallel):
            self.slots.put(slot)
        self.lock = threading.Lock()
        self.finished = 0

    def train_all(self, todo: list[tuple[SweepRun, Path | None]]) -> list[RunOutcome]:
        if not todo:
            return []
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            return list(pool.map(self._train, todo))

    def _train(self, item: tuple[SweepRun, Path | None]) -> RunOutcome:
        run, checkpoint = item
        slot = self.slots.get()
        try:
            command = train_command(run, self.config, checkpoint)
            run.directory.mkdir(parents=True, exist_ok=True)
            began = time.monotonic()
            with self.lock:
                env = _run_env(slot, self.parallel, self.gpus, self.config.threads)
                verb = f"resume from {checkpoint.name}" if checkpoint else "start"
                on_gpu = f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})" if self.gpus else ""
                self.echo(f"{verb:<7} {run.name}{on_gpu}")
            try:
                code, message = _launch(command, env, run.log_path), ""
            except OSError as error:
                code, message = -1, f"could not start: {error}"
            outcome = self._outcome(run, code, message, time.monotonic() - began)
            self._report(outcome)
            return outcome
        finally:
            self.slots.put(slot)

    def _outcome(self, run: SweepRun, code: int, message: str, seconds: float) -> RunOutcome:
        """Done (its checkpoints removed unless kept) when it exited 0 with results.json, else failed."""
        if code == 0 and run.results_path.is_file():
            if not self.config.keep_checkpoints:
                for path in run.directory.glob("checkpoint-*"):
                    shutil.rmtree(path, ignore_errors=True)
            return RunOutcome(run, "done", seconds, code, _final_line(run.results_path))
        detail = message or (f"killed by signal {-code}" if code < 0 else _log_tail(run.log_path))
        if code == 0:
            detail = "exited 0 but wrote no results.json"
        return RunOutcome(run, "failed", seconds, code, detail)

    def _report(self, outcome: RunOutcome) -> None:
        with self.lock:
            self.finished += 1
            head = f"[{self.finished}/{self.total}] {outcome.run.name}"
            if outcome.status == "done":
                self.echo(f"{head}: done in {outcome.seconds:.1f} s ({outcome.message})")
            else:
                self.echo(
                    f"{head}: FAILED (exit {outcome.returncode}) after {outcome.seconds:.1f} s: {outcome.message}\n"
                    f"        log: {outcome.run.log_path}"
                )


def _settings_differ(results_path: Path, config: SweepConfig) -> str:
    """What a finished run's ``results.json`` says it was trained with, where that is not ``config``."""
    try:
        saved = RunResults.load(results_path).config
    except DataError:
        return "unreadable results.json"
    wanted = {
        "dataset": config.dataset,
        "epochs": float(config.epochs),
        "t0": config.t0,
        "t1": config.t1,
        "learning_rate": config.learning_rate,
        "variant": config.variant,
        "ema_alpha": config.ema_alpha,
        "cam_method": config.cam_method,
        "per_sample": config.per_sample,
    }
    return ", ".join(
        f"{key} {getattr(saved, key)!r} != {value!r}"
        for key, value in wanted.items()
        if getattr(saved, key) is not None and getattr(saved, key) != value
    )


def _final_line(results_path: Path) -> str:
    try:
        results = RunResults.load(results_path)
    except DataError:
        return "results.json unreadable"
    return (
        f"acc {fmt_metric(results.metric('accuracy'))}  kappa {fmt_metric(results.metric('kappa'))}  "
        f"L_CAM {fmt_metric(results.metric(CONSISTENCY))}"
    )


def _log_tail(log_path: Path, lines: int = 3) -> str:
    try:
        text = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    errors = [line for line in text if line.startswith(("error:", "Traceback")) or "Error" in line.split(":")[0]]
    tail = errors[-1:] if errors else text[-lines:]
    return " | ".join(line.strip() for line in tail)[-300:] or "no output"


def invocation_file(shard: Shard | None = None) -> str:
    """Where an invocation is recorded: ``sweep.json``, one file per shard (``sweep.shard-2-of-4.json``)
    so that shards on several machines never write the same file."""
    return "sweep.json" if shard is None else f"sweep.shard-{shard.index}-of-{shard.count}.json"


def _record_invocation(out: Path, config: SweepConfig, invoked_as: Sequence[str] | None, shard: Shard | None) -> None:
    """Append this invocation (config and command) to its :func:`invocation_file`."""
    path = out / invocation_file(shard)
    try:
        history = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        history = []
    history.append(
        {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "invoked_as": list(invoked_as) if invoked_as is not None else None,
            "command": explicit_command(config) + (f" --shard {shard}" if shard else ""),
            "config": asdict(config),
        }
    )
    write_json(path, history)
