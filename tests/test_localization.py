"""Localisation: the pointing game's peak and tolerance, chance and perfect-map references, zero maps,
per class, against plain computations."""

import math

import numpy as np
import pytest
import torch

from hf_gazecons.cam import resize_maps
from hf_gazecons.localization import (
    LOCALIZATION_SUMS,
    Localization,
    energy_pointing_game,
    localization_sums,
    perfect_maps,
    pointing_chance,
    pointing_game,
)
from hf_gazecons.metric import ConsistencyStatistics


def rectangles(n: int, size: int, smallest: int, largest: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for mask in masks:
        height, width = torch.randint(smallest, largest + 1, (2,), generator=generator).tolist()
        top = torch.randint(0, size - height + 1, (), generator=generator).item()
        left = torch.randint(0, size - width + 1, (), generator=generator).item()
        mask[top : top + height, left : left + width] = True
    return masks


@pytest.mark.parametrize("size", [64, 96, 224])
@pytest.mark.parametrize("grid", [2, 3, 4, 5, 7, 14])
def test_a_perfect_map_points_inside_its_object(size, grid):
    """The mask averaged onto the CAM grid points inside every object at least one cell wide, at
    any placement; the argmax of the upsampled map (the old rule) does not."""
    cell = math.ceil(size / grid)
    if cell > size // 2:
        pytest.skip("a cell wider than half the image")
    masks = rectangles(200, size, cell, size // 2, seed=size * grid)
    maps = perfect_maps(masks, (grid, grid))
    assert pointing_game(maps, masks).all()
    if grid == 4 and size == 64:  # a 16-px cell in a 64-px image: the argmax of the upsampled map misses often
        peaks = resize_maps(maps, (size, size)).flatten(1).argmax(dim=1)
        assert masks.flatten(1).gather(1, peaks[:, None]).float().mean() < 0.9


def brute_force_hits(maps: torch.Tensor, masks: torch.Tensor, tolerance: float) -> list[bool]:
    """A plain computation: the centre of mass of the maximal cells, in pixels, rounded; a hit when
    some mask pixel lies within ``tolerance`` of it."""
    hits = []
    for coarse, mask in zip(maps.numpy(), masks.numpy()):
        (h, w), (height, width) = coarse.shape, mask.shape
        cells = np.argwhere(coarse == coarse.max())
        row = np.mean((cells[:, 0] + 0.5) * height / h - 0.5)
        col = np.mean((cells[:, 1] + 0.5) * width / w - 0.5)
        peak = np.array([min(max(math.floor(row + 0.5), 0), height - 1), min(max(math.floor(col + 0.5), 0), width - 1)])
        hits.append(bool((np.linalg.norm(np.argwhere(mask) - peak, axis=1) <= tolerance).any()))
    return hits


@pytest.mark.parametrize("tolerance", [0, 1.5, 4, 15])
def test_pointing_game_with_a_tolerance_against_a_plain_computation(tolerance):
    generator = torch.Generator().manual_seed(int(tolerance * 10))
    masks = rectangles(60, 48, 3, 12, seed=7)
    maps = torch.rand(60, 6, 6, generator=generator)
    maps[:10] = (maps[:10] * 2).round()  # ties between cells
    assert pointing_game(maps, masks, tolerance).tolist() == brute_force_hits(maps, masks, tolerance)
    near = [
        [[(np.linalg.norm(np.argwhere(m) - (r, c), axis=1) <= tolerance).any() for c in range(48)] for r in range(48)]
        for m in masks[:5].numpy()
    ]
    assert pointing_chance(masks[:5], tolerance).tolist() == pytest.approx(np.mean(near, axis=(1, 2)).tolist())


def test_chance_is_a_uniform_map_and_the_perfect_map_beats_it():
    masks = rectangles(20, 64, 10, 30, seed=3)
    uniform = torch.ones(20, 4, 4)
    share = masks.flatten(1).float().mean(dim=1)
    assert energy_pointing_game(uniform, masks) == pytest.approx(share)
    perfect = energy_pointing_game(perfect_maps(masks, (4, 4)), masks)
    assert (perfect > share).all()


def test_localization_sums_leave_zero_maps_out_and_count_them_per_class():
    masks = rectangles(6, 32, 8, 16, seed=1)
    maps = torch.rand(6, 4, 4, generator=torch.Generator().manual_seed(2))
    maps[[1, 4]] = 0.0
    classes = torch.tensor([0, 0, 1, 1, 2, 2])
    sums = localization_sums(maps, masks, classes, num_classes=3, tolerance=2)
    assert sums[:, LOCALIZATION_SUMS.index("n_with_mask")].tolist() == [2, 2, 2]
    assert sums[:, LOCALIZATION_SUMS.index("n_zero_maps")].tolist() == [1, 0, 1]
    kept = [0, 2, 3, 5]
    expected = {
        "energy_pointing_game": energy_pointing_game(maps[kept], masks[kept]),
        "pointing_game": pointing_game(maps[kept], masks[kept], 2).double(),
        "energy_pointing_game_chance": masks[kept].flatten(1).double().mean(1),
        "pointing_game_chance": pointing_chance(masks[kept], 2),
        "pointing_game_perfect": pointing_game(perfect_maps(masks[kept], (4, 4)), masks[kept], 2).double(),
    }
    for column, values in expected.items():
        per_class = torch.zeros(3, dtype=torch.float64).index_add_(0, classes[kept], values.double())
        assert sums[:, LOCALIZATION_SUMS.index(column)] == pytest.approx(per_class)
    localization = Localization.from_class_sums(sums, ["a", "b", "c"], 2)
    assert (localization.n, localization.n_zero_maps, localization.tolerance) == (4, 2, 2)
    assert localization.zero_map_share == pytest.approx(2 / 6)
    assert localization.per_class["a"].n == 1 and localization.per_class["a"].n_zero_maps == 1
    assert localization.energy_pointing_game == pytest.approx(float(expected["energy_pointing_game"].mean()))
    low, high = localization.pointing_game_interval
    assert 0 <= low <= localization.pointing_game <= high <= 1


def test_the_metric_reports_chance_perfect_tolerance_and_classes():
    masks = rectangles(4, 32, 8, 16, seed=4)
    maps = perfect_maps(masks, (4, 4))
    maps[3] = 0.0
    labels = torch.tensor([0, 1, 1, 0])
    logits = torch.nn.functional.one_hot(labels, 2).float()
    statistics = ConsistencyStatistics(2, pointing_tolerance=15)
    statistics.update(maps, logits, labels, masks)
    result = statistics.result(["circle", "square"], "features")
    assert result.localization.pointing_game == 1.0 and result.localization.n_zero_maps == 1
    metrics = result.to_metrics()
    assert metrics["eval_pointing_game_tolerance"] == 15
    assert metrics["eval_localization_zero_map_share"] == pytest.approx(0.25)
    assert metrics["eval_pointing_game_square"] == metrics["eval_perfect_pointing_game_square"] == 1.0
    assert metrics["eval_chance_energy_pointing_game_circle"] == pytest.approx(float(masks[0].float().mean()))
    assert metrics["eval_perfect_energy_pointing_game"] == pytest.approx(metrics["eval_energy_pointing_game"])
    assert 0 < metrics["eval_chance_energy_pointing_game"] < metrics["eval_energy_pointing_game"]
    located = result.to_dict()["localization"]
    assert located["tolerance"] == 15 and set(located["per_class"]) == {"circle", "square"}


def test_the_references_script_scores_the_perfect_map_of_every_mask(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "localization_references.py"
    spec = importlib.util.spec_from_file_location("localization_references", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = module.references("builtin:shapes?size=48&n_train=1&n_val=3&n_test=1", "validation", (3, 3), 2.0)
    assert found.n == 12 and found.tolerance == 2.0
    assert set(found.per_class) == {"circle", "square", "triangle", "cross"}
    # the perfect map is the map scored: its own columns equal the figures
    assert found.energy_pointing_game == pytest.approx(found.energy_pointing_game_perfect)
    assert found.pointing_game == pytest.approx(found.pointing_game_perfect)
    assert 0 < found.energy_pointing_game_chance < found.energy_pointing_game_perfect
    assert module.main(["builtin:shapes?size=48&n_train=1&n_val=3&n_test=1", "--grid", "3", "3"]) == 0
    assert "perfect map (mask on the 3x3 grid)" in capsys.readouterr().out
