"""compare_cam_methods (``score --cam-method all``): each method's result equals gaze_consistency under
that method, the per-image deviations are those of a plain computation from the final class maps,
and the rank correlations are scipy's on them."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from scipy.stats import spearmanr
from tiny import random_test_resnet
from torch import nn

from hf_gazecons.cam import CAM
from hf_gazecons.data import load_image_dataset
from hf_gazecons.errors import MetricError
from hf_gazecons.method_comparison import compare_cam_methods, per_image_deviations
from hf_gazecons.metric import gaze_consistency
from hf_gazecons.models import load_model, save_model
from hf_gazecons.run_record import RunConfig, RunResults
from hf_gazecons.sweep.files import read_csv

METHODS = ["gradcam", "gradcampp", "layercam", "hirescam", "eigencam"]
GRID = (3, 3)


@functools.cache
def model() -> nn.Module:
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=3, zero_init_last=False)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.5)
            nn.init.normal_(module.bias, 0.0, 0.3)
    return net.eval()


@functools.cache
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """24 images; labels are the predictions except every 5th (wrong), so each class has correct samples."""
    x = torch.randn(24, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = model()(x).argmax(dim=1)
    labels = predicted.clone()
    labels[::5] = (predicted[::5] + 1) % 3
    return x, labels


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, labels = data()
    return list(zip(x.split(8), labels.split(8)))


@pytest.fixture(scope="module")
def comparison():
    return compare_cam_methods(model(), batches(), METHODS, target="layer3", grid=GRID, progress=False)


def plain_deviations(method: str, variant: str) -> np.ndarray:
    """The obvious computation: every image's map, the correct ones, each class's mean (robust: of
    its non-zero maps) and each map's deviation from it, in numpy."""
    x, labels = data()
    out = CAM(model(), "layer3", method)(x)
    maps = torch.nn.functional.adaptive_avg_pool2d(out.maps[:, None], GRID)[:, 0].double().numpy()
    correct = (out.logits.argmax(dim=1) == labels).numpy()
    maps, classes = maps[correct].reshape(int(correct.sum()), -1), labels.numpy()[correct]
    deviations = np.full(len(maps), np.nan)
    for c in np.unique(classes):
        own = maps[classes == c]
        if len(own) < 2:
            continue
        if variant == "paper":
            deviations[classes == c] = ((own - own.mean(axis=0)) ** 2).mean(axis=1)
        else:
            live = own[own.max(axis=1) > 0]
            class_map = live.mean(axis=0)
            norms = np.linalg.norm(own, axis=1)
            cosine = np.where(norms > 0, own @ class_map / np.where(norms > 0, norms, 1) / np.linalg.norm(class_map), 0)
            deviations[classes == c] = 2 * (class_map**2).mean() * (1 - cosine)
    return deviations


def test_each_method_equals_gaze_consistency_under_it(comparison):
    for method in METHODS:
        single = gaze_consistency(model(), batches(), target="layer3", grid=GRID, cam_method=method, progress=False)
        got = comparison.results[method]
        assert got.cam_method == method and single.cam_method == method
        assert got.values == pytest.approx(single.values, abs=1e-9)
        assert (got.n_correct, got.n_zero_maps) == (single.n_correct, single.n_zero_maps)


@pytest.mark.parametrize("variant", ["paper", "robust"])
def test_per_image_deviations_are_the_plain_ones_and_average_to_l_cam(comparison, variant):
    for method in METHODS:
        expected = plain_deviations(method, variant)
        if variant == "paper":
            got = comparison.deviations[method]
        else:
            x, labels = data()
            out = CAM(model(), "layer3", method)(x)
            correct = out.logits.argmax(dim=1) == labels
            grid_maps = torch.nn.functional.adaptive_avg_pool2d(out.maps[:, None], GRID)[:, 0]
            got = per_image_deviations(grid_maps[correct], labels[correct], variant).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
        defined = ~np.isnan(expected)
        assert defined.sum() >= 10
        assert np.mean(expected[defined]) == pytest.approx(comparison.results[method].values[variant], rel=1e-5)


def test_rank_correlations_are_scipys(comparison):
    assert len(comparison.rank_correlations) == len(METHODS) * (len(METHODS) - 1) // 2
    for (a, b), rho in comparison.rank_correlations.items():
        x, y = plain_deviations(a, "paper"), plain_deviations(b, "paper")
        defined = ~(np.isnan(x) | np.isnan(y))
        assert rho == pytest.approx(spearmanr(x[defined], y[defined]).statistic, abs=1e-9), (a, b)
    # at a stage before the pooled map the methods differ but agree in part
    assert comparison.correlation("gradcam", "hirescam") < 1
    text = comparison.table()
    assert "Spearman rank correlation" in text and all(m in text for m in METHODS)
    entry = comparison.to_dict()
    assert list(entry["by_cam_method"]) == METHODS
    assert entry["cam_method_rank_correlation"]["gradcam|layercam"] == comparison.correlation("layercam", "gradcam")


def test_kept_maps_beyond_the_limit_are_refused():
    with pytest.raises(MetricError, match=r"keeps every correct sample's map under every method.*--max-samples"):
        compare_cam_methods(model(), batches(), METHODS, target="layer3", max_kept_bytes=1000, progress=False)


def test_cam_transfer_script_rescores_runs_under_each_method(tmp_path, capsys):
    """scripts/cam_transfer.py: every run below the folders, under each method, as the library scores it;
    the table compares the regularised arm with the lambda-0 arm per method."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "cam_transfer.py"
    spec = importlib.util.spec_from_file_location("cam_transfer", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    dataset = "builtin:shapes?num_classes=3&size=48&n_train=2&n_val=6&n_test=2"
    labels = ["circle", "square", "triangle"]
    for i, (lam, seed) in enumerate(((0.0, 0), (0.0, 1), (50.0, 0), (50.0, 1))):
        run = tmp_path / "demo" / f"lambda{lam:g}" / f"seed{seed}"
        save_model(random_test_resnet(labels, 48, seed=i), run)
        config = RunConfig(model="test_resnet", lambda_max=lam, seed=seed, dataset=dataset, eval_split="validation",
                           label_names=labels, target_layer="layer3", cam_method="gradcam")  # fmt: skip
        RunResults(config, final={}).save(run)
    out = tmp_path / "out"
    assert script.main([str(tmp_path / "demo"), "--methods", "gradcam", "eigencam", "--output-dir", str(out)]) == 0
    rows = read_csv(out / "cam_transfer.csv")
    assert len(rows) == 8 and {r["cam_method"] for r in rows} == {"gradcam", "eigencam"}
    row = next(r for r in rows if r["cam_method"] == "eigencam" and r["lambda_max"] == 50 and r["seed"] == 1)
    data = load_image_dataset(dataset, "validation")
    expected = gaze_consistency(load_model(row["run"]), data, target="layer3", cam_method="eigencam", progress=False)
    assert row["gaze_consistency"] == pytest.approx(expected.value, rel=1e-5)
    assert row["n_correct"] == expected.n_correct and row["trained_cam_method"] == "gradcam"
    assert len(read_csv(out / "rank_correlations.csv")) == 4  # one pair per run
    printed = capsys.readouterr().out
    assert "lambda_max 50, variant paper, trained under gradcam" in printed
    assert sum(line.strip().startswith(("gradcam ", "eigencam ")) for line in printed.splitlines()) == 2
    assert (out / "cam_transfer.png").stat().st_size > 0
    # --rows re-tabulates and re-plots the CSV without re-scoring: the same table
    again = tmp_path / "again"
    assert script.main(["--rows", str(out / "cam_transfer.csv"), "--output-dir", str(again)]) == 0
    table = printed.split("\nwrote")[0]
    assert capsys.readouterr().out.split("\nwrote")[0] == table and (again / "cam_transfer.png").is_file()
    for bad in (tmp_path / "missing.csv", out / "rank_correlations.csv"):
        assert script.main(["--rows", str(bad), "--output-dir", str(tmp_path / "bad")]) == 2
        assert capsys.readouterr().err.startswith("error: --rows") and not (tmp_path / "bad").exists()
