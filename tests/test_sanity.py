"""Sanity check: cascading randomisation on a tiny timm model."""

from __future__ import annotations

import pytest
import torch

from hf_gazecons.sanity import cascading_randomization, randomization_steps

timm = pytest.importorskip("timm")


def _tiny():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3).eval()
    images = torch.randn(6, 3, 64, 64)
    images[:, :, 16:40, 20:44] += 2.0  # some structure for the maps
    return model, images


def test_cascade_order_covers_the_model_top_down():
    model, _ = _tiny()
    steps = randomization_steps(model)
    assert [name for name, _ in steps] == ["fc", "layer4", "layer3", "layer2", "layer1", "conv1+bn1"]
    covered = {n for _, names in steps for n in names}
    with_parameters = {n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))}
    assert with_parameters <= covered


def test_randomizing_nothing_keeps_the_maps():
    model, images = _tiny()
    (result,) = cascading_randomization(model, images, target="layer2", steps=[])
    assert result["randomized_up_to"] == "none" and result["n_samples"] == 6
    assert result["spearman_mean"] == pytest.approx(1.0, abs=1e-9)
    assert result["n_undefined"] == result["n_constant_original"]


def test_randomizing_everything_changes_the_maps_but_not_the_model():
    model, images = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = cascading_randomization(model, images, target="layer2", seed=1)
    assert [r["randomized_up_to"] for r in results] == [
        "none",
        "fc",
        "layer4",
        "layer3",
        "layer2",
        "layer1",
        "conv1+bn1",
    ]
    assert results[0]["spearman_mean"] == pytest.approx(1.0, abs=1e-9)
    assert results[-1]["spearman_mean"] < 0.6, results
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="labelled"):
        cascading_randomization(model, images, target="layer2", class_target="label")
    labelled = cascading_randomization(model, (images, torch.tensor([0, 1, 2, 0, 1, 2])), target="layer2",
                                       class_target="label", steps=[("fc", ["fc"])])  # fmt: skip
    assert [r["randomized_up_to"] for r in labelled] == ["none", "fc"]
