"""The metric against a brute-force computation from stored maps (docs/METHOD.md, sections 2-4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import cohen_kappa_score
from tiny import CONSISTENCY_JSON_KEYS

from hf_gazecons.cam import GradCAM
from hf_gazecons.errors import DataError, MetricError
from hf_gazecons.metric import REFERENCE_BYTES_PER_PIXEL, ConsistencyStatistics, cohen_kappa, gaze_consistency


def brute_force(maps, labels, predictions, num_classes, variant, grid=None):
    """docs/METHOD.md (2.2), (3.1)-(3.3) and (4.1)-(4.3) read literally: class means of correct maps,
    per-sample distances, averages."""
    if grid is not None:  # area means on a side that shrinks, bilinear on a side that grows
        shrunk = F.adaptive_avg_pool2d(maps[:, None], (min(grid[0], maps.shape[1]), min(grid[1], maps.shape[2])))
        maps = F.interpolate(shrunk, size=grid, mode="bilinear", align_corners=False)[:, 0]
    maps = maps.double()
    per_class, total, count = {}, 0.0, 0
    for c in range(num_classes):
        members = [maps[i] for i in range(len(maps)) if labels[i] == c and predictions[i] == c]
        if len(members) < 2:
            per_class[c] = None
            continue
        mean = sum(members) / len(members)
        pixels = mean.numel()
        if variant == "paper":
            values = [float(((m - mean) ** 2).sum() / pixels) for m in members]
        elif variant == "robust":  # the paper distance after rescaling m to the norm of the non-zero maps' mean
            live = [m for m in members if m.norm() > 0]
            ref = sum(live) / len(live) if live else torch.zeros_like(mean)
            worst = float(2 * (ref**2).sum() / pixels) if live else 2.0  # a map with no overlap
            values = [
                float(((m * ref.norm() / m.norm() - ref) ** 2).sum() / pixels) if m.norm() > 0 else worst
                for m in members
            ]
        elif variant == "pearson":  # (1 - r) / 2 against the summed standardised maps; a constant map: 1
            live = [(m - m.mean()) / (m - m.mean()).norm() for m in members if (m - m.mean()).norm() > 0]
            direction = sum(live) if live else torch.zeros_like(mean)
            values = [
                float((1 - ((m - m.mean()) / (m - m.mean()).norm() * direction).sum() / direction.norm()) / 2)
                if (m - m.mean()).norm() > 0
                else 1.0
                for m in members
            ]
        else:
            values = [float(torch.sqrt(((m - mean) ** 2).sum()) / pixels) for m in members]
        per_class[c] = sum(values) / len(values)
        total += sum(values)
        count += len(values)
    return (total / count if count else None), per_class


def random_batches(seed=0, n_batches=4, batch=16, k=3, size=(5, 6)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        maps = torch.rand(batch, *size, generator=g)
        maps[torch.rand(batch, generator=g) < 0.15] = 0.0  # some collapsed maps
        labels = torch.randint(0, k, (batch,), generator=g)
        logits = torch.randn(batch, k, generator=g)
        logits[torch.arange(batch), labels] += 1.0  # mostly correct
        out.append((maps, logits, labels))
    return out


@pytest.mark.parametrize("variant", ["paper", "reference", "robust", "pearson"])
@pytest.mark.parametrize("grid", [None, (3, 4), (7, 7)])
def test_statistics_match_brute_force(variant, grid):
    batches = random_batches()
    stats = ConsistencyStatistics(3, variant, grid)
    for maps, logits, labels in batches:
        stats.update(maps, logits, labels)
    result = stats.result(["a", "b", "c"], "layer")
    maps = torch.cat([b[0] for b in batches])
    logits = torch.cat([b[1] for b in batches])
    labels = torch.cat([b[2] for b in batches])
    expected, per_class = brute_force(maps, labels, logits.argmax(1), 3, variant, grid)
    assert result.value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    for c, name in enumerate("abc"):
        assert result.per_class[name].value == pytest.approx(per_class[c], rel=1e-9, abs=1e-12)
    assert result.cam_size == (grid or (5, 6))
    assert result.accuracy == pytest.approx(float((logits.argmax(1) == labels).double().mean()))
    assert result.kappa == pytest.approx(cohen_kappa_score(labels.numpy(), logits.argmax(1).numpy()))
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    for other in result.values:  # the variants computed beside the one asked for agree with theirs
        assert result.values[other] == pytest.approx(
            brute_force(maps, labels, logits.argmax(1), 3, other, grid)[0], rel=1e-9, abs=1e-12
        )
    assert set(result.values) == {"paper", "robust", "pearson"} | ({"reference"} if variant == "reference" else set())


def test_streaming_equals_one_batch():
    batches = random_batches(seed=3)
    streamed, whole = ConsistencyStatistics(3), ConsistencyStatistics(3)
    for maps, logits, labels in batches:
        streamed.update(maps, logits, labels)
    whole.update(*(torch.cat(parts) for parts in zip(*batches)))
    a, b = streamed.result(list("abc"), "t"), whole.result(list("abc"), "t")
    assert a.value == pytest.approx(b.value, rel=1e-12)
    assert torch.allclose(a.class_means, b.class_means)


def test_paper_variant_memory_does_not_grow():
    stats = ConsistencyStatistics(3)
    for maps, logits, labels in random_batches(n_batches=10):
        stats.update(maps, logits, labels)
    assert all(not kept for kept in stats.kept_maps)
    assert stats.map_sum.shape == (3, 5, 6)


def test_classes_below_two_correct_are_excluded():
    maps = torch.rand(5, 4, 4)
    labels = torch.tensor([0, 0, 0, 1, 2])
    logits = F.one_hot(torch.tensor([0, 0, 0, 1, 0]), 3).float()  # class 1: one correct, class 2: none
    stats = ConsistencyStatistics(3)
    stats.update(maps, logits, labels)
    result = stats.result(list("abc"), "t")
    expected, _ = brute_force(maps, labels, logits.argmax(1), 3, "paper")
    assert result.per_class["b"].value is None and result.per_class["b"].n_correct == 1
    assert result.per_class["c"].value is None and result.per_class["c"].n_correct == 0
    assert result.per_class["c"].n_samples == 1
    assert result.value == pytest.approx(expected)
    assert torch.isnan(result.class_means[2]).all()


def test_no_correct_sample_gives_none_with_warning():
    stats = ConsistencyStatistics(2)
    stats.update(torch.rand(4, 3, 3), F.one_hot(torch.tensor([1, 1, 0, 0]), 2).float(), torch.tensor([0, 0, 1, 1]))
    with pytest.warns(UserWarning, match="no sample was classified correctly"):
        result = stats.result(["x", "y"], "t")
    assert result.value is None
    assert result.accuracy == 0.0
    assert result.to_dict()["gaze_consistency"] is None


def test_kappa_from_confusion_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    y, p = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (200,), generator=g)
    confusion = torch.zeros(4, 4)
    confusion.index_put_((y, p), torch.ones(200), accumulate=True)
    assert cohen_kappa(confusion) == pytest.approx(cohen_kappa_score(y.numpy(), p.numpy()))
    assert math.isnan(cohen_kappa(torch.tensor([[5.0, 0.0], [0.0, 0.0]])))


class TinyNet(torch.nn.Module):
    def __init__(self, k=3):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, k)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_gaze_consistency_on_a_dataloader_equals_brute_force_from_stored_maps():
    torch.manual_seed(0)
    model = TinyNet()
    x, y = torch.randn(24, 3, 8, 8), torch.randint(0, 3, (24,))
    data = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 24, 8)]
    result = gaze_consistency(model, data, target="features", progress=False)
    out = GradCAM(model, "features")(x)
    expected, _ = brute_force(out.maps, y, out.logits.argmax(1), 3, "paper")
    assert result.value == pytest.approx(expected, rel=1e-6)
    assert result.n_samples == 24 and result.target_name == "features"
    assert set(result.to_dict()) == CONSISTENCY_JSON_KEYS


def test_dict_batches_with_masks_report_localization():
    torch.manual_seed(0)
    model = TinyNet(2)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    masks[:, :4] = True
    result = gaze_consistency(
        model, [{"pixel_values": x, "labels": y, "masks": masks}], target="features", progress=False
    )
    if result.n_correct:
        assert result.localization is not None
        assert 0.0 <= result.localization.energy_pointing_game <= 1.0
        assert 0.0 <= result.localization.pointing_game <= 1.0


def test_localization_counts_only_correct_samples_whose_mask_marks_an_object():
    """builtin:brain's no_tumour images have empty masks: nothing to point at, so they are left out
    of the energy pointing game and the pointing game instead of scoring as misses."""
    maps = torch.zeros(4, 2, 2)
    maps[:, 0, 0] = 1.0  # every map: all its mass and its peak in the top-left cell
    maps[1, 1, 1] = 3.0  # sample 1: a quarter of its mass top-left, its peak bottom-right
    masks = torch.zeros(4, 2, 2, dtype=torch.bool)
    masks[:2, 0, 0] = True  # samples 0 and 1: the object top-left; 2 and 3: no object
    masks[3, 0, 0] = True  # ... except sample 3, which the model gets wrong
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # sample 3 wrong
    stats = ConsistencyStatistics(2)
    stats.update(maps, logits, labels, masks)
    localization = stats.result(["a", "b"], "features").localization
    # samples 0 and 1 only: energy (1 + 1/4) / 2, hits (1 + 0) / 2
    assert localization.n == 2
    assert localization.energy_pointing_game == pytest.approx((1.0 + 0.25) / 2)
    assert localization.pointing_game == pytest.approx(0.5)
    empty = ConsistencyStatistics(2)
    empty.update(maps[2:3], logits[2:3], labels[2:3], masks[2:3])
    assert empty.result(["a", "b"], "features").localization is None  # no object among the correct


def test_labels_outside_the_model_are_an_error():
    with pytest.raises(DataError, match="outside the model's 3 classes"):
        gaze_consistency(
            TinyNet(), [(torch.randn(2, 3, 8, 8), torch.tensor([0, 5]))], target="features", progress=False
        )


def test_empty_iterable_is_an_error():
    with pytest.raises(MetricError, match="no samples"):
        gaze_consistency(TinyNet(), [], target="features", progress=False, label_names=list("abc"))


def test_model_mode_is_restored():
    model = TinyNet()
    model.train()
    model.features.eval()
    gaze_consistency(model, [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))], target="features", progress=False)
    assert model.training and not model.features.training


def test_all_zero_maps_of_correct_samples_are_counted():
    maps = torch.rand(6, 3, 3)
    maps[[0, 1, 4]] = 0.0  # 0, 1: correct class 0; 4: correct class 1; 5 is wrong
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    predictions = torch.tensor([0, 0, 0, 1, 1, 0])
    maps[5] = 0.0
    stats = ConsistencyStatistics(2)
    stats.update(maps, F.one_hot(predictions, 2).float(), labels)
    result = stats.result(["a", "b"], "t")
    assert result.n_zero_maps == 3
    assert [c.n_zero_maps for c in result.per_class.values()] == [2, 1]
    assert result.zero_map_share == pytest.approx(3 / 5)
    assert result.to_dict()["n_zero_maps"] == 3 and result.to_dict()["zero_map_share"] == pytest.approx(0.6)


def test_robust_variant_scores_collapsed_maps_as_the_worst_and_the_paper_variant_as_the_best():
    """docs/METHOD.md, section 8: the paper distance rewards an all-zero map; the robust one scores it the worst."""
    honest = torch.zeros(4, 4, 4)
    for i, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):  # blobs that overlap a little
        honest[i, r : r + 2, c : c + 2] = 1.0
    collapsed = honest.clone()
    collapsed[3] = 0.0
    labels = torch.zeros(4, dtype=torch.long)
    logits = F.one_hot(labels, 2).float()
    scores = {}
    for name, maps in (("honest", honest), ("collapsed", collapsed)):
        stats = ConsistencyStatistics(2, "paper")
        stats.update(maps, logits, labels)
        scores[name] = stats.result(["a", "b"], "t").values
    assert scores["collapsed"]["paper"] < scores["honest"]["paper"]
    assert scores["collapsed"]["robust"] > scores["honest"]["robust"]
    stats = ConsistencyStatistics(2, "robust")
    stats.update(torch.zeros(3, 4, 4), F.one_hot(torch.zeros(3, dtype=torch.long), 2).float(), torch.zeros(3).long())
    assert stats.result(["a", "b"], "t").value == 2.0  # every map collapsed: the variant's bound


# ------------------------------------------------------------------------------------------------
# streamed data sets, and the reference variant's memory limit
# ------------------------------------------------------------------------------------------------
STREAM_SPEC = "builtin:shapes?num_classes=3&size=64&n_train=2&n_val=8&n_test=2"


@pytest.fixture(scope="module")
def shapes_model():
    from hf_gazecons.data import load_image_dataset
    from hf_gazecons.models import load_model

    torch.manual_seed(0)
    loaded = load_model("test_resnet", label_names=["circle", "square", "triangle"], image_size=64)
    return loaded, load_image_dataset(STREAM_SPEC, "validation")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_scores_like_the_same_data_loaded_whole(shapes_model, workers):
    loaded, validation = shapes_model
    whole = gaze_consistency(loaded, validation, batch_size=5, progress=False)
    stream = validation.to_iterable_dataset(num_shards=2)  # two shards: one per loader worker
    streamed = gaze_consistency(loaded, stream, batch_size=5, num_workers=workers, progress=False)
    assert streamed.n_samples == whole.n_samples == 24 and streamed.n_correct == whole.n_correct > 2
    assert streamed.value == pytest.approx(whole.value, rel=1e-9)
    assert streamed.kappa == pytest.approx(whole.kappa)
    assert streamed.localization.energy_pointing_game == pytest.approx(whole.localization.energy_pointing_game)
    torch.testing.assert_close(streamed.class_means, whole.class_means, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_reference_variant_refuses_before_it_would_pass_its_memory_limit(shapes_model):
    loaded, validation = shapes_model
    per_map = REFERENCE_BYTES_PER_PIXEL * 2 * 2  # test_resnet at 64 px: 2x2 maps
    with pytest.raises(MetricError, match=r"24 samples may need .*--variant paper"):  # known length: at once
        gaze_consistency(loaded, validation, variant="reference", max_kept_bytes=23 * per_map, progress=False)
    stream = validation.to_iterable_dataset()  # unknown length: stops when the kept maps pass the limit
    with pytest.raises(MetricError, match=r"stopped at \d+ kept maps"):
        gaze_consistency(loaded, stream, variant="reference", batch_size=4, max_kept_bytes=per_map, progress=False)
    fits = gaze_consistency(loaded, validation, variant="reference", max_kept_bytes=24 * per_map, progress=False)
    assert fits.values["reference"] is not None
    paper = gaze_consistency(loaded, validation, max_kept_bytes=1, progress=False)  # keeps no maps: no limit
    assert paper.value is not None


def test_reference_limit_defaults_to_half_the_available_memory():
    from hf_gazecons.metric import reference_memory_limit

    assert ConsistencyStatistics(2, "reference").max_kept_bytes == pytest.approx(reference_memory_limit(), rel=0.2)
    assert 0 < reference_memory_limit() < 2**50
    assert ConsistencyStatistics(2, "paper").max_kept_bytes is None
