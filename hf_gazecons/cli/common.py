"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import GazeConsError


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="timm architecture, hf-hub:org/name, Hub id org/name, or a folder"
    )
    parser.add_argument("--target-layer", default=None, help="module name (e.g. layer3) or timm stage index (e.g. -2)")
    parser.add_argument("--image-size", type=int, default=None, help="square input size (default: the model's)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code to run")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="builtin:shapes", help="builtin:shapes|digits[?opts], Hub id, or a folder")
    parser.add_argument("--split", default=None, help="split to use (default: validation, else test, else train)")
    parser.add_argument("--image-column", default=None, help="image column (detected if omitted)")
    parser.add_argument("--label-column", default=None, help="label column (detected if omitted)")


def target(value: str | None) -> str | int | None:
    """A ``--target-layer`` value as GradCAM takes it: an integer string is a timm stage index."""
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Write into a temporary sibling folder and move it to ``path`` only if the block succeeds."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise GazeConsError(f"output directory {str(path)!r} exists and is not empty; choose another --output-dir")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()  # unlike tempfile.mkdtemp (always 0700), honours the umask
    try:
        yield staging
        if path.exists():
            path.rmdir()
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
