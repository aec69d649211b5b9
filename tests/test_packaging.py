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
