"""The repository stands alone: no file refers to anything outside it (a restatement of the method
kept elsewhere, another checkout's files, an issue tracker), and every docs/METHOD.md section the
code cites exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# spelled in pieces, so that this file does not match itself
OUTSIDE = [
    r"\b" + "SP" + r"EC\b",  # the restatement the method was first written in
    "SP" + r"EC\.md",
    r"\.\./" + "shared",
    "/" + "work/",
    "KNOW" + r"LEDGE\.md",
    "ARCHI" + r"TECTURE\.md",
    r"\bthe " + r"issue\b",
    r"\bissue " + r"#?\d+",
]
CITATION = re.compile(  # "METHOD.md, section 3", "sections 5-7", "sections 5 and 6", "(1.4)"
    r"METHOD\.md\)?,? (?:section (\d+)|sections (\d+)(?:[-–]| and )(\d+)|\((\d+)\.\d+\))"
)


def _files() -> list[Path]:
    """The repository's files (git's list in a checkout, else every file outside hidden and build folders)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        paths = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked source archive)
        skipped = {"build", "dist", "__pycache__"}
        parts = {p: p.relative_to(ROOT).parts for p in ROOT.rglob("*")}
        paths = [p for p, names in parts.items() if not any(n.startswith(".") or n in skipped for n in names)]
    return [path for path in paths if path.is_file() and not path.is_symlink()]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_file_refers_to_anything_outside_the_repository():
    found = []
    for path in _files():
        text = _text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern in OUTSIDE:
                if re.search(pattern, line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_every_cited_section_of_method_md_exists():
    method = (ROOT / "docs" / "METHOD.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", method, re.M)}
    assert sections == set(range(1, max(sections) + 1))  # numbered without gaps
    cited = {}
    for path in _files():
        text = _text(path) if path.suffix in (".py", ".md") else None
        for match in CITATION.finditer(" ".join((text or "").split())):
            for number in filter(None, match.groups()):
                cited.setdefault(int(number), str(path.relative_to(ROOT)))
    assert len(cited) >= 10, cited  # the code and the docs cite most sections
    missing = {number: where for number, where in cited.items() if number not in sections}
    assert not missing, missing
