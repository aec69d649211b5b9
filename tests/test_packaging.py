"""The distribution: every package is listed, and the model card template ships as package data."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from setuptools import find_packages

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_and_maps_the_templates():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = find_packages(str(ROOT), include=["hf_gazecons*"])
    assert sorted(setuptools["packages"]) == sorted([*found, "hf_gazecons.templates"])
    assert setuptools["package-dir"] == {"hf_gazecons.templates": "model_cards"}


def test_the_card_template_is_package_data():
    template = importlib.resources.files("hf_gazecons.templates") / "gazecons_model_card.md"
    assert template.is_file() and "{{ card_data }}" in template.read_text()


def test_dev_brings_the_peers_the_tests_compare_against():
    """CI installs ``.[dev]``: the faithfulness tests then run against the peers' own code, pinned to
    the versions whose metrics ours follow."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "hf-gazecons[peers]" in extras["dev"] and extras["bench"] == ["hf-gazecons[peers]"]
    assert {"torchcam==0.5.0", "grad-cam==1.5.7"} <= set(extras["peers"])


def test_every_library_the_package_imports_is_declared():
    """A third-party module that hf_gazecons imports (at the top of a module or inside a function)
    belongs to a distribution named in pyproject.toml's dependencies or an optional extra."""
    import ast
    import importlib.metadata
    import re
    import sys

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    providers = importlib.metadata.packages_distributions()
    imported = set()
    for path in (ROOT / "hf_gazecons").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.partition(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "hf_gazecons"}
    undeclared = {
        module: providers.get(module)
        for module in third_party
        if not {d.lower().replace("_", "-") for d in providers.get(module, [module])} & names
    }
    assert "scipy" in third_party and not undeclared, undeclared


def test_the_report_template_is_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    template = importlib.resources.files("hf_gazecons.report") / "report.html.j2"
    assert template.is_file() and any(Path(template.name).match(pattern) for pattern in data["hf_gazecons.report"])
    assert "{% for s in sections %}" in template.read_text()
