"""What kind of output a folder is, and its report: the page's context, rendered from the template."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from jinja2 import Environment, StrictUndefined

from ..errors import UsageError
from ..filenames import REPORT_FILE, RESULTS_FILE
from .groups import demo_context, sweep_context
from .run import run_section

__all__ = ["REPORT_KINDS", "TEMPLATE", "report_kind", "write_report"]

REPORT_KINDS = {
    "sweep": "runs.csv",
    "demo": "comparison.json",
    "train": RESULTS_FILE,
    "score": "consistency.json",
}
"""Each kind of output folder and the file that marks it (checked in this order)."""

TEMPLATE = importlib.resources.files("hf_gazecons.report") / "report.html.j2"


def report_kind(directory: str | Path) -> str:
    """``score``, ``train``, ``demo`` or ``sweep``; a UsageError for any other folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"{str(directory)!r} is not a folder: name a score, train, demo or sweep output")
    for kind, marker in REPORT_KINDS.items():
        if (directory / marker).is_file():
            return kind
    markers = ", ".join(REPORT_KINDS.values())
    raise UsageError(f"{str(directory)!r} is not a score, train, demo or sweep output (it has none of {markers})")


def write_report(directory: str | Path, output: str | Path | None = None) -> Path:
    """Render the report of ``directory`` into ``output`` (default ``directory/report.html``)."""
    directory = Path(directory)
    kind = report_kind(directory)
    if kind == "sweep":
        context = sweep_context(directory)
    elif kind == "demo":
        context = demo_context(directory)
    else:
        section = run_section(directory, kind, anchor="run")
        context = {"title": f"hf-gazecons {kind} report", "kind": kind, "sections": [section], "group": None}
    output = Path(output) if output is not None else directory / REPORT_FILE
    html = _environment().from_string(TEMPLATE.read_text(encoding="utf-8")).render(**context)
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, output)  # never a half-written report
    return output


def _environment() -> Environment:
    return Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
