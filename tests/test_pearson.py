"""The pearson variant (hf_gazecons/variants/pearson.py) on synthetic map sets, against plain computations.

* a set of jittered compact blobs is not penalised more than the same maps inverted (why ``robust``
  lights the background, docs/OBJECTIVES.md section 5: its cosine penalises the blobs ten to
  thirty-six times more);
* the all-zero map is a worst case, per sample and in the metric;
* the value does not change with a map's energy or offset (the min-max normalisation's choices);
* the class map is the direction that minimises the class's summed deviation;
* training and the metric compute the same quantity from the same class map;
* the class map follows a horizontal flip of the training image.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_gazecons.deviation import per_sample_deviation
from hf_gazecons.metric import ConsistencyStatistics
from hf_gazecons.regularizer import GazeConsistencyLoss
from hf_gazecons.variants import get_variant
from hf_gazecons.variants.pearson import centred_unit_maps, has_direction

PEARSON = get_variant("pearson")
PEARSON_WORST = PEARSON.worst


def jittered_blobs(n=48, size=8, sigma=0.8, jitter=1.5, seed=0):
    """Min-max normalised Gaussian blobs around one place, moved by up to ``jitter`` cells."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centres = torch.tensor([0.3 * size, 0.6 * size]) + (torch.rand(n, 2, generator=g) * 2 - 1) * jitter
    blobs = torch.exp(
        -((rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2) / (2 * sigma**2)
    )
    low, high = blobs.flatten(1).amin(1)[:, None, None], blobs.flatten(1).amax(1)[:, None, None]
    return (blobs - low) / (high - low)


def metric_values(maps, labels=None):
    labels = torch.zeros(len(maps), dtype=torch.long) if labels is None else labels
    stats = ConsistencyStatistics(int(labels.max()) + 1, "pearson")
    stats.update(maps, F.one_hot(labels, int(labels.max()) + 1).float(), labels)
    return stats.result([str(c) for c in range(int(labels.max()) + 1)], "t").values


def plain_pearson(x, y):
    """Pearson's r of two maps, written out."""
    x, y = x.flatten().double(), y.flatten().double()
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / (dx.pow(2).sum().sqrt() * dy.pow(2).sum().sqrt()))


def training_loss(maps, variant, labels=None, **kwargs):
    labels = torch.zeros(len(maps), dtype=torch.long) if labels is None else labels
    k = int(labels.max()) + 1
    return float(GazeConsistencyLoss(k, 0.0, variant)(maps, F.one_hot(labels, k).float(), labels, **kwargs).loss)


@pytest.mark.parametrize("size, sigma, jitter", [(4, 0.5, 0.75), (8, 0.8, 1.5), (16, 1.5, 3.0)])
def test_compact_blobs_are_not_penalised_more_than_their_inverses(size, sigma, jitter):
    blobs = jittered_blobs(size=size, sigma=sigma, jitter=jitter)
    inverses = 1 - blobs  # the background lit, the object the dark hole
    on, off = metric_values(blobs), metric_values(inverses)
    assert on["pearson"] <= off["pearson"] * (1 + 1e-6)  # float32 maps: 1 - x rounds
    assert on["pearson"] == pytest.approx(off["pearson"], rel=1e-6)  # inversion changes nothing
    assert training_loss(blobs, "pearson") == pytest.approx(training_loss(inverses, "pearson"), rel=1e-5)
    # the trap it removes: the cosine that robust trains on penalises the blobs far more than the inverses
    mean_cosine = {
        name: float((1 - F.cosine_similarity(m.flatten(1), m.mean(0).flatten()[None], dim=1)).mean())
        for name, m in (("on", blobs), ("off", inverses))
    }
    assert mean_cosine["on"] > 5 * mean_cosine["off"]


def test_the_all_zero_map_is_a_worst_case():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(200, 4, 4, generator=g) ** 3
    class_maps = torch.rand(200, 4, 4, generator=g)
    values = per_sample_deviation(maps, class_maps, "pearson")
    assert (values >= 0).all() and (values <= PEARSON_WORST).all()
    zero = per_sample_deviation(torch.zeros(1, 4, 4), class_maps[:1], "pearson")
    assert float(zero) == PEARSON_WORST
    anti = per_sample_deviation(1 - class_maps[:1], class_maps[:1], "pearson")  # r = -1: the other worst case
    assert float(anti) == pytest.approx(PEARSON_WORST)
    # in the metric: collapsing any one map never lowers the class's value
    blobs = jittered_blobs(n=12, size=4, sigma=0.6, jitter=1.0)
    honest = metric_values(blobs)["pearson"]
    for i in range(len(blobs)):
        collapsed = blobs.clone()
        collapsed[i] = 0.0
        assert metric_values(collapsed)["pearson"] > honest
    assert metric_values(torch.zeros(3, 4, 4))["pearson"] == PEARSON_WORST  # every map collapsed


def test_the_value_is_blind_to_a_map_s_energy_and_offset():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(30, 5, 5, generator=g, dtype=torch.float64)
    labels = torch.arange(30) % 3
    scale = torch.rand(30, 1, 1, generator=g, dtype=torch.float64) * 4 + 0.1
    shift = torch.rand(30, 1, 1, generator=g, dtype=torch.float64) - 0.5
    a, b = metric_values(maps, labels)["pearson"], metric_values(maps * scale + shift, labels)["pearson"]
    assert a == pytest.approx(b, rel=1e-6)
    class_map = torch.rand(5, 5, generator=g, dtype=torch.float64)
    shifted = per_sample_deviation(maps * scale + shift, 3 * class_map - 1, "pearson")
    torch.testing.assert_close(per_sample_deviation(maps, class_map, "pearson"), shifted)


def test_deviation_is_half_of_one_minus_pearson_r_and_the_class_map_minimises_the_sum():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(10, 4, 6, generator=g)
    class_map = torch.rand(4, 6, generator=g)
    values = per_sample_deviation(maps, class_map, "pearson")
    for value, m in zip(values, maps):
        assert float(value) == pytest.approx((1 - plain_pearson(m, class_map)) / 2, rel=1e-5)
    # the metric's class map: the direction of the summed standardised maps, no other does better
    direction = centred_unit_maps(maps.double()).sum(0)
    best = float(PEARSON.deviation(maps.double(), direction).sum())
    assert metric_values(maps)["pearson"] * len(maps) == pytest.approx(best, rel=1e-9)
    for _ in range(50):
        other = direction + 0.3 * torch.randn(direction.shape, generator=g, dtype=torch.float64)
        assert float(PEARSON.deviation(maps.double(), other).sum()) >= best - 1e-9


def test_training_and_the_metric_compute_the_same_quantity():
    """With EMA factor 0 the class map of one batch is the batch's own: the penalty is the metric."""
    g = torch.Generator().manual_seed(4)
    maps = torch.rand(12, 4, 4, generator=g) ** 2
    maps[3] = 0.0  # a collapsed map: the worst value in both
    labels = torch.tensor([0] * 7 + [1] * 5)
    assert training_loss(maps, "pearson", labels) == pytest.approx(metric_values(maps, labels)["pearson"], rel=1e-5)


def test_constant_maps_have_no_direction():
    maps = torch.stack([torch.zeros(3, 3), torch.full((3, 3), 0.3), torch.eye(3)])
    assert has_direction(maps).tolist() == [False, False, True]
    assert centred_unit_maps(maps)[:2].abs().sum() == 0
    assert per_sample_deviation(maps, torch.eye(3), "pearson").tolist()[:2] == [PEARSON_WORST, PEARSON_WORST]


@pytest.mark.parametrize("variant", ["paper", "robust", "pearson"])
def test_the_class_map_follows_a_horizontal_flip(variant):
    """Half of a class's images were mirrored: their maps meet the class map mirrored back."""
    blob = torch.zeros(4, 4)
    blob[1, 3] = 1.0  # the object on the right
    maps = torch.stack([blob, blob, blob.flip(-1), blob.flip(-1)])  # 2 and 3: mirrored images, object on the left
    flipped = torch.tensor([False, False, True, True])
    assert training_loss(maps, variant, flipped=flipped) == pytest.approx(0.0, abs=1e-7)
    assert training_loss(maps, variant) > 0.01  # unaligned: the two halves disagree
    raw = maps * 2 - 0.5
    mirrored = GazeConsistencyLoss(1, 0.0, variant)
    plain = GazeConsistencyLoss(1, 0.0, variant)
    labels = torch.zeros(4, dtype=torch.long)
    logits = F.one_hot(labels, 1).float()
    a = mirrored(maps, logits, labels, raw, flipped)
    b = plain(torch.stack([blob] * 4), logits, labels, torch.stack([blob * 2 - 0.5] * 4))
    assert float(a.loss) == pytest.approx(float(b.loss), abs=1e-7)
    torch.testing.assert_close(mirrored.ema, plain.ema)


def test_a_collapsed_map_scores_the_worst_value_and_gets_a_gradient_back():
    raw = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(5))
    raw[2] = -raw[2].abs() - 0.5  # sample 2: no positive evidence anywhere -> an all-zero map
    raw.requires_grad_(True)
    maps = torch.relu(raw) / torch.relu(raw).flatten(1).amax(dim=1).clamp(min=1e-8)[:, None, None]
    reg = GazeConsistencyLoss(1, variant="pearson")
    labels = torch.zeros(3, dtype=torch.long)
    out = reg(maps, F.one_hot(labels, 1).float(), labels, raw)
    torch.testing.assert_close(reg.ema[0], centred_unit_maps(maps[:2].detach()).mean(0))  # the non-zero maps
    values = per_sample_deviation(maps.detach(), reg.ema[0], "pearson")
    depth = -raw[2].detach().max() / raw[2].detach().abs().mean()
    torch.testing.assert_close(out.loss.detach(), (values.sum() + PEARSON_WORST * depth) / 3)
    out.loss.backward()
    assert torch.isfinite(raw.grad).all()
    assert raw.grad[2].flatten()[raw[2].detach().flatten().argmax()] < 0  # its best position is raised
