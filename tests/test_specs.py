"""The spec parsers: what a --model and a --target_layer value name."""

from __future__ import annotations

import pytest

from hf_gazecons.errors import ModelLoadError
from hf_gazecons.specs import ModelSpec, parse_model_spec, parse_target


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("resnet18", ModelSpec("timm", "resnet18")),
        ("resnet18.a1_in1k", ModelSpec("timm", "resnet18.a1_in1k")),
        ("hf-hub:org/name@dev", ModelSpec("hf-hub", "org/name", "dev")),
        ("hf-hub:org/name", ModelSpec("hf-hub", "org/name")),
        ("org/name", ModelSpec("hub", "org/name")),
    ],
)
def test_parse_model_spec(spec, expected):
    assert parse_model_spec(spec) == expected


def test_a_folder_wins_over_an_architecture_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet18").mkdir()
    assert parse_model_spec("resnet18") == ModelSpec("folder", "resnet18")
    assert parse_model_spec("org/name", revision="v1") == ModelSpec("hub", "org/name", "v1")


@pytest.mark.parametrize("spec", ["no_such_architecture_xyz", "a/b/c", "/name"])
def test_unknown_spec_is_a_model_load_error(spec):
    with pytest.raises(ModelLoadError, match="unknown model"):
        parse_model_spec(spec)


def test_base_model_and_head():
    timm_spec, hub_spec, folder = ModelSpec("timm", "resnet18"), ModelSpec("hub", "o/n"), ModelSpec("folder", "x")
    assert (timm_spec.base_model(True), timm_spec.base_model(False)) == ("timm/resnet18", None)
    assert (hub_spec.base_model(False), folder.base_model(True)) == ("o/n", None)
    assert not timm_spec.has_head(pretrained=False)  # random weights: the data set's classes
    assert timm_spec.has_head(pretrained=True) and hub_spec.has_head(False) and folder.has_head(False)


@pytest.mark.parametrize(("value", "expected"), [(None, None), (-2, -2), ("-2", -2), (" 3 ", 3), ("layer3", "layer3")])
def test_parse_target(value, expected):
    assert parse_target(value) == expected
