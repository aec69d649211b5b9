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


def test_the_report_template_is_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    template = importlib.resources.files("hf_gazecons.report") / "report.html.j2"
    assert template.is_file() and any(Path(template.name).match(pattern) for pattern in data["hf_gazecons.report"])
    assert "{% for s in sections %}" in template.read_text()
