"""Output folders that are checked before any work and never left empty or half-written.

* :func:`check_output_dir` — before anything is loaded: the path is not a file, it can be created
  (tried in the nearest existing folder, which also catches read-only file systems and root-owned
  places that ``os.access`` misreports), and, where asked, it is empty;
* :func:`atomic_directory` — write into a hidden sibling and move it into place only on success
  (``score``, ``cam``, ``demo``); folders created on the way are removed on failure;
* :func:`removed_on_failure` — for ``train``, whose Trainer writes checkpoints into the folder as
  it goes: a folder this run created is removed again if the run fails before its first checkpoint;
* :func:`publish_files` — move finished files into a folder, the completion marker last;
* :func:`match_umask` — every written file gets the permissions the umask gives (safetensors
  writes 0600, everything else 0666 & ~umask);
* :func:`last_checkpoint` — the checkpoint a run resumes from: the highest complete ``checkpoint-N``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import GazeConsError, UsageError

__all__ = [
    "check_output_dir",
    "atomic_directory",
    "removed_on_failure",
    "publish_files",
    "match_umask",
    "last_checkpoint",
]


def check_output_dir(path: str | Path, option: str = "--output-dir", must_be_empty: bool = True) -> Path:
    """``path`` as a Path, or a UsageError if it cannot become this command's output folder."""
    if not str(path).strip():
        raise UsageError(f"{option} must name a folder, got {str(path)!r}")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a file, not a folder; choose another {option}")
    if must_be_empty and path.is_dir() and any(path.iterdir()):
        raise UsageError(f"output directory {str(path)!r} exists and is not empty; choose another {option}")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{option} {str(path)!r} cannot be created: {str(base)!r} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hf-gazecons-probe-", dir=base))
    except OSError as error:
        raise UsageError(
            f"{option} {str(path)!r} cannot be written: {error.strerror or error} in {str(base)!r}"
        ) from None
    return path


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Write into a temporary sibling folder and move it to ``path`` only if the block succeeds."""
    path = check_output_dir(path)
    base = _nearest_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()  # unlike tempfile.mkdtemp (always 0700), honours the umask
    try:
        yield staging
        match_umask(staging)
        if path.exists():
            path.rmdir()
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created(path.parent, base)
        raise


@contextmanager
def removed_on_failure(path: str | Path, keep: Callable[[Path], bool], enabled: bool = True) -> Iterator[None]:
    """If the block fails and ``path`` did not exist before it, remove ``path`` (and the parent
    folders made for it) unless ``keep(path)`` says that it holds something worth keeping."""
    path = Path(os.path.abspath(path))
    base = _nearest_existing(path)
    try:
        yield
    except BaseException:
        if enabled and base != path and path.is_dir() and not keep(path):
            shutil.rmtree(path, ignore_errors=True)
            _remove_created(path.parent, base)
        raise


def publish_files(staging: Path, folder: Path, last: str) -> None:
    """Move every file of ``staging`` into ``folder`` (replacing files of the same name), ``last``
    at the end: a reader that sees ``last`` sees all the others."""
    match_umask(staging)
    names = sorted(p.name for p in staging.iterdir())
    if last in names:
        names.remove(last)
        names.append(last)
    for name in names:
        target = folder / name
        if target.is_dir() and not (staging / name).is_dir():
            raise GazeConsError(f"cannot write {str(target)!r}: a folder of that name is in the way")
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)


def match_umask(root: str | Path, paths: Iterable[Path] | None = None) -> None:
    """Give the files under ``root`` (or just ``paths``) mode ``0666 & ~umask``, folders ``0777 & ~umask``."""
    umask = os.umask(0)
    os.umask(umask)
    root = Path(root)
    for path in paths if paths is not None else [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = (0o777 if path.is_dir() else 0o666) & ~umask
        if path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)


def last_checkpoint(folder: str | Path) -> Path | None:
    """The highest ``checkpoint-N`` in ``folder`` that is complete (weights and ``trainer_state.json``;
    the Trainer writes the latter last), as transformers' ``get_last_checkpoint`` finds checkpoints
    but skipping a save that was interrupted; None if there is none."""
    found = []
    for path in Path(folder).glob("checkpoint-*"):
        step = path.name.rpartition("-")[2]
        if (
            path.is_dir()
            and step.isdigit()
            and any(path.glob("*.safetensors"))
            and (path / "trainer_state.json").is_file()
        ):
            found.append((int(step), path))
    return max(found)[1] if found else None


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _remove_created(folder: Path, base: Path) -> None:
    """Remove ``folder`` and its empty parents, up to (not including) ``base``."""
    folder, base = Path(os.path.abspath(folder)), Path(os.path.abspath(base))
    while folder != base and base in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
