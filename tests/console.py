"""The installed ``hf-gazecons`` console script, and several of its runs started at once; or one
run in this process (:func:`run_in_process`).

Each start imports torch, timm and transformers (seconds on 2 cores), so test modules start all
their console cases together in a module fixture and each test waits for its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest


def run_in_process(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    """``hf-gazecons argv`` through ``hf_gazecons.cli.main.main``: (exit status, stdout, stderr);
    argparse's exits count as returns."""
    from hf_gazecons.cli.main import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exit_:
        rc = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def console_script() -> str:
    """The path of ``hf-gazecons`` beside this interpreter (or on PATH); skips the test without one."""
    found = shutil.which("hf-gazecons", path=os.path.dirname(sys.executable)) or shutil.which("hf-gazecons")
    if found is None:
        pytest.skip("the hf-gazecons console script is not installed")
    return found


class Runs:
    """``{name: (argv, env[, preexec_fn])}`` started at once in ``cwd``; ``result(name)`` waits for one
    and returns (exit status, stdout, stderr); ``close()`` kills what still runs."""

    def __init__(self, cases: Mapping[str, tuple], cwd: Path) -> None:
        self._processes = {
            name: subprocess.Popen(
                list(case[0]),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=cwd,
                env=case[1],
                preexec_fn=case[2] if len(case) > 2 else None,
            )  # fmt: skip
            for name, case in cases.items()
        }
        self._finished: dict[str, tuple[int, str, str]] = {}

    def result(self, name: str, timeout: float = 300) -> tuple[int, str, str]:
        if name not in self._finished:
            out, err = self._processes[name].communicate(timeout=timeout)
            self._finished[name] = (self._processes[name].returncode, out, err)
        return self._finished[name]

    def close(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


def in_process(capsys, *argv) -> tuple[int, str, str]:
    """``hf-gazecons argv`` run in this process (``hf_gazecons.cli.main.main``): (exit status, stdout, stderr)."""
    from hf_gazecons.cli.main import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
