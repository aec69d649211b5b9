"""Deletion/insertion against torchcam 0.5.0's DeletionInsertionMetric and ROAD against pytorch-grad-cam
1.5.7's, on the same model, images and maps (the peers' own code, imported)."""

import contextlib
import warnings
from functools import partial

import numpy as np
import pytest
import timm
import torch

from hf_gazecons import faithfulness
from hf_gazecons.faithfulness import deletion_insertion, road, road_keep_masks, upsample_maps

torchcam_metrics = pytest.importorskip("torchcam.metrics", reason="the peer torchcam (pip install -e '.[peers]')")
pgc_metrics = pytest.importorskip(
    "pytorch_grad_cam.metrics.perturbation_confidence", reason="the peer pytorch-grad-cam (pip install -e '.[peers]')"
)
from pytorch_grad_cam.metrics.road import NoisyLinearImputer  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget  # noqa: E402

SIZE = 36


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    network = timm.create_model("test_resnet", num_classes=4)
    for module in network.modules():  # random BatchNorm affines: probabilities that react to the input
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.weight, 1.0, 0.5)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
    return network.eval()


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(5, 3, SIZE, SIZE, generator=generator)
    maps = torch.rand(5, 5, 5, generator=generator)
    maps[1] = (maps[1] * 3).round() / 3  # plateaus: ties in the ranking
    maps[2] = 0
    maps[2, 1, 3] = 1  # one hot cell: most pixels tie at 0
    maps[3] = torch.relu(maps[3] - 0.5)  # a Grad-CAM-like map with a zero region
    classes = torch.tensor([0, 1, 2, 3, 1])
    return images, maps, classes


class FixedMaps:
    """A torchcam CAM extractor that returns given maps: torchcam's metric then ranks exactly these."""

    def __init__(self, model, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self):
        yield


def torchcam_auc(model, image, maps, cls, **kwargs):
    metric = torchcam_metrics.DeletionInsertionMetric(FixedMaps(model, maps), partial(torch.softmax, dim=-1), **kwargs)
    metric.update(image, class_idx=[cls])
    summary = metric.summary()
    return summary["deletion_auc"], summary["insertion_auc"]


@pytest.mark.parametrize("steps", [20, 7])
def test_deletion_insertion_matches_torchcam(model, inputs, steps):
    images, maps, classes = inputs
    deletion, insertion = deletion_insertion(model, images, maps, classes, steps=steps, batch_size=9)
    for i in range(len(images)):
        expected = torchcam_auc(model, images[i : i + 1], maps[i : i + 1], int(classes[i]), steps=steps)
        assert deletion[i].item() == pytest.approx(expected[0], abs=1e-4)
        assert insertion[i].item() == pytest.approx(expected[1], abs=1e-4)


def test_deletion_insertion_full_resolution_maps_and_a_baseline_match_torchcam(model, inputs):
    images, _, classes = inputs
    maps = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    deletion, insertion = deletion_insertion(model, images[:3], maps, classes[:3], baseline=0.5)
    for i in range(3):
        expected = torchcam_auc(model, images[i : i + 1], maps[i : i + 1], int(classes[i]), baseline=torch.tensor(0.5))
        assert (deletion[i].item(), insertion[i].item()) == pytest.approx(expected, abs=1e-4)


def test_deletion_insertion_with_torchcams_own_gradcam(model, inputs):
    """torchcam computes Grad-CAM of its prediction and ranks it; we rank the maps it computed."""
    from torchcam.methods import GradCAM

    images = inputs[0][:3]
    with GradCAM(model, target_layer="layer3") as extractor:
        fuse, used = extractor.fuse_cams, []
        extractor.fuse_cams = lambda cams: used.append(fuse(cams).detach()) or used[-1]
        metric = torchcam_metrics.DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1))
        expected = []
        for i in range(3):
            metric.reset()
            metric.update(images[i : i + 1])
            expected.append((metric.summary()["deletion_auc"], metric.summary()["insertion_auc"]))
    predictions = model(images).argmax(1)
    deletion, insertion = deletion_insertion(model, images, torch.cat(used), predictions)
    assert np.abs(torch.stack([deletion, insertion], 1).numpy() - np.array(expected)).max() < 1e-4


def test_a_map_without_a_ranking_gives_nan(model, inputs):
    images, maps, classes = inputs
    constant = maps.clone()
    constant[0], constant[4] = 0.0, 0.7
    deletion, insertion = deletion_insertion(model, images, constant, classes)
    morf, lerf = road(model, images, constant, classes, percentiles=(50,))
    for values in (deletion, insertion, morf[:, 0], lerf[:, 0]):
        assert torch.isnan(values[[0, 4]]).all() and not torch.isnan(values[1:4]).any()


def peer_road(model, images, maps, classes, percentile):
    cams = upsample_maps(maps, images.shape[-2:]).numpy()
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    results = []
    for removal in (pgc_metrics.RemoveMostRelevantFirst, pgc_metrics.RemoveLeastRelevantFirst):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's __array_wrap__ deprecation inside scipy.sparse
            metric = pgc_metrics.PerturbationConfidenceMetric(removal(percentile, NoisyLinearImputer(noise=0.0)))
            results.append(metric(images, cams, targets, model))
    return results


def test_road_matches_pytorch_grad_cam(model, inputs):
    images, maps, classes = inputs
    percentiles = (10, 40, 90)
    morf, lerf = road(model, images, maps, classes, percentiles=percentiles, batch_size=7)
    for j, p in enumerate(percentiles):
        expected_morf, expected_lerf = peer_road(model, images, maps, classes, p)
        assert np.abs(morf[:, j].numpy() - expected_morf).max() < 1e-4
        assert np.abs(lerf[:, j].numpy() - expected_lerf).max() < 1e-4


def test_road_keeps_the_pixels_pytorch_grad_cam_keeps(inputs):
    """The percentile thresholds with ties and zero regions: the peer's own removal classes."""
    _, maps, _ = inputs
    saliency = upsample_maps(maps, (SIZE, SIZE))
    percentiles = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    morf, lerf = road_keep_masks(saliency, percentiles)

    class Spy:
        def __call__(self, image, mask):
            return mask

    for i in range(len(maps)):
        for j, p in enumerate(percentiles):
            cam = torch.from_numpy(saliency[i].numpy())
            assert torch.equal(pgc_metrics.RemoveMostRelevantFirst(p, Spy())(None, cam).bool(), morf[i, j])
            assert torch.equal(pgc_metrics.RemoveLeastRelevantFirst(p, Spy())(None, cam).bool(), lerf[i, j])


def test_road_chunks_give_the_same_values(model, inputs, monkeypatch):
    images, maps, classes = inputs
    whole = road(model, images, maps, classes, percentiles=(30, 70))
    monkeypatch.setattr(faithfulness, "_IMPUTATION_MEMORY", 1)  # one image's systems at a time
    chunked = road(model, images, maps, classes, percentiles=(30, 70), batch_size=3)
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, atol=1e-6)


def test_road_noise_is_seeded(model, inputs):
    images, maps, classes = inputs
    first = road(model, images, maps, classes, percentiles=(50,), noise=0.2, generator=torch.Generator().manual_seed(0))
    again = road(model, images, maps, classes, percentiles=(50,), noise=0.2, generator=torch.Generator().manual_seed(0))
    exact = road(model, images, maps, classes, percentiles=(50,))
    assert torch.equal(first[0], again[0]) and not torch.allclose(first[0], exact[0], atol=1e-6)


def test_inputs_are_checked(model, inputs):
    images, maps, classes = inputs
    with pytest.raises(ValueError, match="5 images, 4 maps"):
        deletion_insertion(model, images, maps[:4], classes)
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, images, maps, classes, steps=0)


def test_a_data_set_report_scores_each_image_and_its_references(model):
    """evaluate_faithfulness against direct calls on the same images: the Grad-CAM of the predicted
    class, the seeded random map, the perfect map only where a mask marks an object."""
    from hf_gazecons.cam import GradCAM
    from hf_gazecons.faithfulness_report import FaithfulnessSettings, evaluate_faithfulness
    from hf_gazecons.localization import perfect_maps
    from hf_gazecons.stats import mean_interval

    generator = torch.Generator().manual_seed(5)
    images = torch.randn(5, 3, SIZE, SIZE, generator=generator)
    masks = torch.zeros(5, SIZE, SIZE, dtype=torch.bool)
    masks[:3, 4:20, 10:30] = True  # images 3 and 4 have no object
    labels = torch.tensor([0, 1, 2, 3, 0])
    batches = [{"pixel_values": images[:3], "labels": labels[:3], "masks": masks[:3]},
               {"pixel_values": images[3:], "labels": labels[3:], "masks": masks[3:]}]  # fmt: skip
    settings = FaithfulnessSettings(tests=("deletion", "road"), steps=5, percentiles=(50,), seed=3)
    report = evaluate_faithfulness(model, batches, settings, target="layer3", progress=False)

    out = GradCAM(model, target="layer3")(images)
    predictions = out.logits.argmax(1)
    random_maps = torch.rand(3, *out.maps.shape[1:], generator=torch.Generator().manual_seed(3))
    expected = {
        "gradcam": deletion_insertion(model, images, out.maps.detach(), predictions, steps=5),
        "random": deletion_insertion(model, images[:3], random_maps, predictions[:3], steps=5),
        "perfect": deletion_insertion(
            model, images[:3], perfect_maps(masks[:3], out.maps.shape[1:]), predictions[:3], steps=5
        ),
    }
    morf, lerf = road(model, images, out.maps.detach(), predictions, percentiles=(50,))
    rows = report.images
    assert [row["index"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["prediction"] for row in rows] == predictions.tolist()
    assert [row["perfect"] is None for row in rows] == [False, False, False, True, True]
    for name, (deletion, insertion) in expected.items():
        for i in range(len(deletion)):
            assert rows[i][name]["deletion_auc"] == pytest.approx(float(deletion[i]), abs=1e-6)
            assert rows[i][name]["insertion_auc"] == pytest.approx(float(insertion[i]), abs=1e-6)
    assert [row["gradcam"]["road_morf"] for row in rows] == pytest.approx(morf[:, 0].tolist(), abs=1e-6)
    assert [row["gradcam"]["road_lerf"] for row in rows] == pytest.approx(lerf[:, 0].tolist(), abs=1e-6)
    summary = report.summary()["gradcam"]["deletion_auc"]
    values = [float(v) for v in expected["gradcam"][0]]
    assert summary["mean"] == pytest.approx(sum(values) / 5) and summary["n"] == 5 and summary["n_undefined"] == 0
    assert summary["interval"] == pytest.approx(list(mean_interval(values, bounds=(0.0, 1.0))))
    assert report.to_dict()["summary"]["perfect"]["deletion_auc"]["n"] == 3
    with pytest.raises(ValueError, match="faithfulness tests"):
        FaithfulnessSettings(tests=("insertion",))


@pytest.mark.parametrize("method", ["hirescam", "layercam"])
def test_a_data_set_report_scores_the_maps_of_the_method_asked_for(model, method):
    """With cam_method, the scored maps are that method's (CAM(model, method=...)), not Grad-CAM's."""
    from hf_gazecons.cam import CAM
    from hf_gazecons.faithfulness_report import FaithfulnessSettings, evaluate_faithfulness

    images = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    batches = [{"pixel_values": images, "labels": torch.tensor([0, 1, 2])}]
    settings = FaithfulnessSettings(tests=("deletion",), steps=5)
    report = evaluate_faithfulness(model, batches, settings, target="layer3", progress=False, cam_method=method)
    out = CAM(model, target="layer3", method=method)(images)
    deletion, insertion = deletion_insertion(model, images, out.maps.detach(), out.logits.argmax(1), steps=5)
    assert [row["gradcam"]["deletion_auc"] for row in report.images] == pytest.approx(deletion.tolist(), abs=1e-6)
    assert [row["gradcam"]["insertion_auc"] for row in report.images] == pytest.approx(insertion.tolist(), abs=1e-6)
