"""``hf-gazecons COMMAND --help`` from a cache: building some helps imports torch and transformers.

``train``'s options come from ``HfArgumentParser`` over ``TrainingArguments`` (about 10 s to build
on 2 CPU cores: transformers and torch are imported). The help text is kept in
``$XDG_CACHE_HOME/hf_gazecons`` (default ``~/.cache/hf_gazecons``), one file
per command for this package's source, the transformers and Python versions and the terminal
width, so a stale help is never shown; any run that builds a parser anyway may store its help.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["asks_for_help", "cached_help", "store_help"]

_PACKAGE = Path(__file__).resolve().parents[1]


def asks_for_help(argv: Sequence[str]) -> bool:
    """``-h`` or ``--help`` among the options (before a ``--``)."""
    options = list(argv[: list(argv).index("--")] if "--" in argv else argv)
    return "-h" in options or "--help" in options


def cached_help(command: str, build: Callable[[], str]) -> str:
    """The help of ``command``: from the cache, else ``build()`` (and cached)."""
    path = _path(command)
    try:
        return path.read_text()
    except OSError:
        text = build()
        _write(path, text)
        return text


def store_help(command: str, text: str) -> None:
    """Cache ``text`` unless there is a current one (one process of several; never fails the caller)."""
    if os.environ.get("RANK", "0") == "0" and not _path(command).is_file():
        _write(_path(command), text)


def _path(command: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hf_gazecons"
    return cache / f"{command}-help-{_key()}-{shutil.get_terminal_size().columns}.txt"


@functools.cache
def _key() -> str:
    digest = hashlib.sha256()
    for part in (_version("transformers"), platform.python_version()):
        digest.update(part.encode() + b"\0")
    for source in sorted(_PACKAGE.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{path.name.partition('-help-')[0]}-help-*.txt"):
            stale.unlink(missing_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as file:
            file.write(text)
        os.replace(file.name, path)
    except OSError:  # e.g. a read-only home: the help is still printed, only not cached
        pass


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"
