"""Tests of builtin:brain (hf_gazecons.data.brain): determinism, columns, lesion anatomy, options."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Image
from scipy import ndimage
from scipy.spatial import ConvexHull
from tiny import (
    LOCALIZATION_JSON_KEYS,
    assert_same_seed_same_bytes,
    image_bytes,
    random_test_resnet,
    tiny_cnn_accuracy,
)

from hf_gazecons.cli.main import main as cli_main
from hf_gazecons.data import brain as brain_module
from hf_gazecons.data import load_image_dataset, make_brain
from hf_gazecons.data.brain import BRAIN_CLASSES, load_template, render_brain
from hf_gazecons.data.tumours import GLIOMA, MENINGIOMA, NO_TUMOUR, PITUITARY
from hf_gazecons.errors import DataError
from hf_gazecons.metric import gaze_consistency
from hf_gazecons.models import load_model, save_model
from hf_gazecons.sweep.files import write_csv

pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

SMALL = {"size": 64, "n_train": 3, "n_val": 1, "n_test": 2}


@pytest.fixture(scope="module")
def small_brain():
    return make_brain(**SMALL, seed=0)


@pytest.fixture(scope="module")
def samples() -> dict[int, list]:
    """Twelve 128-pixel samples of each class, at the default options."""
    template = load_template()
    rng = np.random.default_rng(123)
    return {
        label: [render_brain(rng, label, template, 128, 0.25, 1.0, 2) for _ in range(12)]
        for label in range(len(BRAIN_CLASSES))
    }


def test_brain_is_deterministic(small_brain):
    assert_same_seed_same_bytes(small_brain, make_brain(**SMALL, seed=0), make_brain(**SMALL, seed=1))


def test_brain_columns_features_and_sizes(small_brain):
    assert list(small_brain) == ["train", "validation", "test"]
    for split, per_class in (("train", 3), ("validation", 1), ("test", 2)):
        ds = small_brain[split]
        assert ds.column_names == ["image", "label", "mask"]
        assert ds.features["label"] == ClassLabel(names=["glioma", "meningioma", "no_tumour", "pituitary"])
        assert ds.features["mask"] == Image(mode="L")
        assert np.bincount(ds["label"][:], minlength=4).tolist() == [per_class] * 4
        for row in ds:
            assert row["image"].mode == "L" and row["image"].size == (64, 64)
            assert row["mask"].mode == "L" and row["mask"].size == (64, 64)
            mask = np.asarray(row["mask"])
            assert set(np.unique(mask).tolist()) <= {0, 255}
            # a mask exactly for the three tumour classes
            assert mask.any() == (row["label"] != NO_TUMOUR)


def test_load_image_dataset_builds_the_same_data():
    spec = "builtin:brain?size=64&n_train=1&n_val=1&n_test=1&jitter=0.1&contrast=1.5&distractors=0&seed=4"
    loaded = load_image_dataset(spec, "test")
    direct = make_brain(size=64, n_train=1, n_val=1, n_test=1, jitter=0.1, contrast=1.5, distractors=0, seed=4)
    assert image_bytes(loaded) == image_bytes(direct["test"])
    assert image_bytes(loaded, "mask") == image_bytes(direct["test"], "mask")


def test_images_look_like_a_brain_on_a_dark_background(samples):
    for sample in samples[NO_TUMOUR]:
        image, brain = sample.image.astype(float), sample.brain
        assert 0.2 < brain.mean() < 0.75  # the whole brain in the field of view, with a margin
        assert not brain[0].any() and not brain[-1].any() and not brain[:, 0].any() and not brain[:, -1].any()
        assert image[brain].mean() > 90 and image[~brain].mean() < 25


def _convex_hull(region: np.ndarray) -> np.ndarray:
    """The pixels inside the convex hull of ``region``'s pixels."""
    hull = ConvexHull(np.argwhere(region))
    grid = np.indices(region.shape).reshape(2, -1).T
    # inside = on the inner side of every facet (normal . p + offset <= 0)
    return (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9).all(axis=1).reshape(region.shape)


def _template_values(sample, channel: int) -> np.ndarray:
    """A channel of the template slice (0 T1, 1 WM, 2 brain, 3 blurred brain) at each pixel's position."""
    template = load_template()
    plane = next(p for p in template.slices if p.z_mm == sample.z_mm)
    x, y = sample.position
    coords = [x + template.origin[0] + 1, y + template.origin[1] + 1]  # the maps have a 1-voxel border
    return ndimage.map_coordinates(plane.maps[channel], coords, order=1)


def test_masks_lie_in_the_head(samples):
    for label in (GLIOMA, PITUITARY):
        for sample in samples[label]:
            assert sample.mask.sum() >= 12, BRAIN_CLASSES[label]
            # within 3 px (5 mm) of the brain's convex hull (which holds the sella)
            outside = ndimage.distance_transform_edt(~_convex_hull(sample.brain))
            assert outside[sample.mask].max() <= 3.0, BRAIN_CLASSES[label]
    for sample in samples[MENINGIOMA]:
        assert sample.mask.sum() >= 12
        # inside the dura (the template's brain blurred by 6 mm, its 0.3 level: ~3 mm outside the
        # brain's surface); the brain has yielded, but much of the tumour is where brain was
        assert _template_values(sample, 3)[sample.mask].min() > 0.25
        assert (_template_values(sample, 2)[sample.mask] > 0.5).mean() > 0.3
    for sample in samples[NO_TUMOUR]:
        assert not sample.mask.any()


def test_pituitary_tumours_sit_at_the_sella_on_the_midline(samples):
    for sample in samples[PITUITARY]:
        x, y = (p[sample.mask] for p in sample.position)  # template mm
        assert np.abs(x.mean()) < 3.5 and np.abs(x).max() < 16.0  # midline
        assert -8.0 < y.mean() < 10.0  # the sella, in front of the brainstem
        assert sample.mask.sum() < 0.02 * sample.mask.size  # small
        assert sample.z_mm <= -8  # a low slice


def test_meningiomas_touch_the_brains_outer_surface(samples):
    for sample in samples[MENINGIOMA]:
        inside = ndimage.binary_fill_holes(sample.brain)
        depth = ndimage.distance_transform_edt(inside)  # pixels to the outside of the brain
        assert depth[sample.mask].min() <= 1.0  # against the surface (extra-axial)
        x, y = (p[sample.mask].mean() for p in sample.position)
        assert np.hypot(x, y) > 25.0  # not at the sella (x = y = 0 mm)


def test_gliomas_sit_in_hemispheric_white_matter(samples):
    shares = []
    for sample in samples[GLIOMA]:
        inside = ndimage.binary_fill_holes(sample.brain)
        depth = ndimage.distance_transform_edt(inside)
        assert depth[sample.mask].mean() > 4.0  # intra-axial
        wm, brain = _template_values(sample, 1), _template_values(sample, 2) > 0.5  # before the push
        centre = tuple(np.round(ndimage.center_of_mass(sample.mask)).astype(int))
        assert wm[centre] > 0.5  # grown from white matter
        assert np.abs(sample.position[0][centre]) >= 10.0  # in a hemisphere, off the midline
        shares.append((wm[sample.mask].mean(), wm[brain].mean()))
    in_tumour, in_brain = np.mean(shares, axis=0)
    # at these levels white matter is a fifth of the brain; the tumours infiltrate cortex too
    assert in_tumour > 1.3 * in_brain


def test_contrast_scales_lesion_visibility_only():
    template = load_template()
    faint, plain, strong = (
        render_brain(np.random.default_rng(9), GLIOMA, template, 96, 0.25, contrast, 0) for contrast in (0.0, 1.0, 2.0)
    )
    assert np.array_equal(faint.mask, plain.mask) and np.array_equal(plain.mask, strong.mask)
    difference = np.abs(plain.image.astype(float) - faint.image)[plain.mask].mean()
    assert difference > 25
    assert np.abs(strong.image.astype(float) - faint.image)[plain.mask].mean() > difference


def test_jitter_spreads_the_lesion_site():
    template = load_template()

    def spread(jitter: float) -> float:
        rng = np.random.default_rng(5)
        centres = []
        for _ in range(16):
            sample = render_brain(rng, GLIOMA, template, 64, jitter, 1.0, 0)
            x, y = (p[sample.mask] for p in sample.position)
            centres.append((abs(x.mean()), y.mean()))  # left and right are mirror sites
        return float(np.asarray(centres).std(axis=0).mean())

    assert spread(0.0) < 8.0 < spread(0.5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"size": 48}, "brain needs size >= 64 pixels, got size=48"),
        ({"n_train": 0}, "brain needs n_train >= 1 image per class"),
        ({"jitter": 1.5}, r"brain needs 0 <= jitter <= 1"),
        ({"contrast": -0.5}, r"brain needs 0 <= contrast <= 4"),
        ({"distractors": -1}, "brain needs distractors >= 0"),
    ],
)
def test_option_errors_are_one_line(options, message):
    with pytest.raises(DataError, match=message) as info:
        make_brain(**options)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="unknown option 'num_classes' of builtin:brain"):
        load_image_dataset("builtin:brain?num_classes=3")


@pytest.mark.parametrize("missing", ["nibabel", "nilearn"])
def test_missing_dependency_says_what_to_install(monkeypatch, missing):
    load_template.cache_clear()
    monkeypatch.setitem(sys.modules, missing, None)  # ``import missing`` now raises ImportError
    try:
        with pytest.raises(DataError) as info:
            load_image_dataset("builtin:brain?size=64&n_train=1&n_val=1&n_test=1")
        assert str(info.value) == brain_module.INSTALL_HINT
        assert 'pip install "hf-gazecons[mri]"' in str(info.value)
    finally:
        load_template.cache_clear()


def test_the_template_is_nilearns_own_mni152():
    """The files read are those of nilearn's loaders, which read them from the package (no download)."""
    from nilearn import datasets
    from nilearn.image import get_data

    assert datasets.MNI152_FILE_PATH.name == brain_module.TEMPLATE_FILES["t1"]
    assert datasets.GM_MNI152_FILE_PATH.name == brain_module.TEMPLATE_FILES["gm"]
    assert datasets.WM_MNI152_FILE_PATH.name == brain_module.TEMPLATE_FILES["wm"]
    plane = load_template().slices[0]
    t1_image = datasets.load_mni152_template(resolution=1)
    t1, wm = get_data(t1_image), get_data(datasets.load_mni152_wm_template(resolution=1))
    k = round(plane.z_mm - t1_image.affine[2, 3])  # the slice's voxel index
    np.testing.assert_allclose(plane.maps[0, 1:-1, 1:-1], t1[:, :, k], atol=1e-6)
    np.testing.assert_allclose(plane.maps[1, 1:-1, 1:-1], wm[:, :, k], atol=1e-6)


def test_brain_is_learnable_by_a_tiny_cnn_and_only_through_the_tumours():
    """A short version of the 128-pixel learnability check of docs/BRAIN.md: 64 px, 60 training images
    per class, 8 epochs, three seeds (data and initialisation). Seeds 0-4 gave 0.72-0.83 (chance 0.25);
    with 40 images per class seed 2 gave 0.49."""

    def accuracy(seed: int, contrast: float) -> float:
        dsd = make_brain(size=64, n_train=60, n_val=25, n_test=1, contrast=contrast, seed=seed)
        return tiny_cnn_accuracy(dsd, seed=seed, recalibrate_batchnorm=True)

    visible = [accuracy(seed, contrast=1.0) for seed in (0, 1, 2)]
    assert min(visible) >= 0.6, f"validation accuracies {visible} (chance 0.25)"
    # the same training with invisible tumours: nothing else in the images tells the classes apart
    invisible = accuracy(0, contrast=0.0)
    assert invisible <= 0.45, f"validation accuracy {invisible} with invisible tumours (chance 0.25)"


# ---------------------------------------------------------------------------------------------
# every entry point reads builtin:brain with its masks
# ---------------------------------------------------------------------------------------------
TINY_BRAIN = "builtin:brain?size=64&n_train=2&n_val=3&n_test=1&seed=3"


def _per_class_table():
    """scripts/per_class_table.py as a module."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "per_class_table.py"
    spec = importlib.util.spec_from_file_location("per_class_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _class_rows(variant, lam, name, values, robust_factor=1.0):
    """per_class_table rows of one setting and class: (L_CAM, EPG) per seed."""
    return [{"variant": variant, "backbone": "test_resnet", "lambda_max": lam, "seed": seed, "class": name,
             "lcam_paper": lcam, "lcam_robust": lcam * robust_factor, "zero_map_share": 0.0,
             "energy_pointing_game": epg, "pointing_game": None, "accuracy": 0.9}
            for seed, (lcam, epg) in enumerate(values)]  # fmt: skip


def test_per_class_change_table_calls_a_change_only_beyond_the_spread():
    rows = _class_rows("paper", 0.0, "glioma", [(0.030, 0.30), (0.026, 0.10), (0.034, 0.20)])
    rows += _class_rows("paper", 50.0, "glioma", [(0.003, 0.25), (0.002, 0.05), (0.004, 0.15)])
    rows += _class_rows("robust", 10.0, "glioma", [(0.010, 0.2)], robust_factor=0.5)  # one seed: no interval
    rows[-1]["zero_map_share"] = 0.5
    lines = _per_class_table().change_table(rows).splitlines()
    assert len(lines) == 4  # header, rule, one line per regularised setting; lambda 0 is the reference
    paper = dict(zip(lines[0].split(" | "), lines[2].split(" | ")))
    assert paper["L_CAM ratio, paper / robust"] == "0.10 / 0.10" and paper["seeds"] == "3 vs 3"
    assert paper["Δ L_CAM (its variant)"].startswith("-0.0270 [") and paper["Δ L_CAM (its variant)"].endswith(
        "**lower**"
    )
    assert paper["Δ EPG"].startswith("-0.050 [") and paper["Δ EPG"].endswith("within the spread")
    assert paper["Δ all-zero maps"] == "+0.000 (no spread to judge by)" and paper["Δ PG (0 px)"] == "n/a"
    robust = dict(zip(lines[0].split(" | "), lines[3].split(" | ")))
    assert robust["| variant"] == "| robust" and robust["Δ all-zero maps"] == "+0.500 (no spread to judge by)"
    assert robust["L_CAM ratio, paper / robust"] == "0.33 / 0.17"  # robust is judged on its own L_CAM
    assert robust["Δ L_CAM (its variant)"] == "-0.0250 (no spread to judge by)"


def test_a_change_of_a_share_has_an_interval_inside_its_range():
    """Welch's t puts the upper end of +0.77 zero-map share at +1.3 for these seeds; two shares
    differ by at most 1, so the table cuts it there (the L_CAM's interval is not cut)."""
    rows = _class_rows("paper", 0.0, "no_tumour", [(0.03, None)] * 5)
    rows += _class_rows("paper", 50.0, "no_tumour", [(0.001, None)] * 5)
    for row, share in zip(rows[5:], (1.0, 1.0, 0.96, 0.88, 0.0)):
        row["zero_map_share"] = share
    cells = dict(zip(*(line.split(" | ") for line in _per_class_table().change_table(rows).splitlines()[::2])))
    low = float(cells["Δ all-zero maps"].split("[")[1].split(",")[0])
    assert 0 < low < 0.768 and cells["Δ all-zero maps"].endswith(", +1.000] **higher**")


def test_per_class_hypothesis_table_compares_the_classes_fall_within_each_model():
    base = [(0.030, 0.3), (0.020, 0.3), (0.040, 0.3)]
    rows = _class_rows("paper", 0.0, "glioma", base) + _class_rows("paper", 0.0, "pituitary", base)
    # the regulariser lowers pituitary's L_CAM 10-fold and glioma's 2-fold: gap -log10(5) = -0.70, up to noise
    rows += _class_rows("paper", 50.0, "glioma", [(v / 2, e) for v, e in base])
    rows += _class_rows("paper", 50.0, "pituitary", [(v / 10 * (1 + 0.01 * s), e) for s, (v, e) in enumerate(base)])
    # robust lowers both by the same factor, up to noise; one run's pituitary L_CAM is 0 (no logarithm)
    rows += _class_rows("robust", 10.0, "glioma", [(v / 3, e) for v, e in base])
    rows += _class_rows("robust", 10.0, "pituitary", [(0.01, 0.3), (0.012, 0.3), (0.0, 0.3)])
    table = _per_class_table().hypothesis_table(rows, "pituitary", "glioma").splitlines()
    header = table[0].split(" | ")
    assert header[-1] == "pituitary fell by the larger factor? |" and len(table) == 4
    paper, robust = (dict(zip(header, line.split(" | "))) for line in table[2:])
    assert paper["runs"] == "3 vs 3" and paper["log10 gap, baseline"] == "0.00 ± 0.00"
    assert (
        paper["Δ gap [95 % CI]"].startswith("-0.69 [")
        and paper["pituitary fell by the larger factor? |"] == "**yes** |"
    )
    assert robust["runs"] == "2 vs 3" and robust["pituitary fell by the larger factor? |"] == "within the spread |"


def test_per_class_table_tabulates_saved_rows_without_scoring(tmp_path, capsys):
    module = _per_class_table()
    rows = _class_rows("paper", 0.0, "glioma", [(0.03, 0.3), (0.02, 0.2)])
    rows += _class_rows("paper", 50.0, "glioma", [(0.003, 0.1), (0.002, 0.1)])
    for row in rows:
        row.update(n_samples=50, n_correct=45)
    write_csv(tmp_path / "rows.csv", module.COLUMNS, rows)
    assert module.main(["--rows", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    assert "| paper | `test_resnet` | 50 | glioma | 2 | 0.0025 ± 0.0007 |" in out and "0.10 / 0.10" in out
    with pytest.raises(SystemExit):
        module.main(["--rows", str(tmp_path / "rows.csv"), str(tmp_path)])  # scoring and --rows: one of the two
    (tmp_path / "other.csv").write_text("backbone,lambda\ntest_resnet,0\n")  # a CSV, but not of this script
    with pytest.raises(SystemExit) as stop:
        module.main(["--rows", str(tmp_path / "other.csv")])
    assert stop.value.code == 2 and "not a per-class table" in capsys.readouterr().err


def test_score_reads_brain_and_scores_localisation_on_its_masks(tmp_path):
    # random models: seed 0 gets only the 3 no_tumour images right (nothing to point at: no
    # localisation), seed 1 only the 3 pituitary ones
    for seed, right_class in ((0, "no_tumour"), (1, "pituitary")):
        model_dir, out_dir = tmp_path / f"model{seed}", tmp_path / f"scored{seed}"
        save_model(random_test_resnet(list(BRAIN_CLASSES), 64, seed), model_dir)
        assert (
            cli_main(["score", "--model", str(model_dir), "--dataset", TINY_BRAIN, "--output-dir", str(out_dir)]) == 0
        )
        result = json.loads((out_dir / "consistency.json").read_text())
        assert result["n_samples"] == 4 * 3 and list(result["per_class"]) == list(BRAIN_CLASSES)
        right = {name: entry["n_correct"] for name, entry in result["per_class"].items()}
        assert right == {name: 3 if name == right_class else 0 for name in BRAIN_CLASSES}
        if right_class == "no_tumour":
            assert result["localization"] is None
        else:
            assert set(result["localization"]) == LOCALIZATION_JSON_KEYS


def test_train_and_sweep_read_brain_and_score_localisation_on_its_masks(tmp_path):
    train_dir = tmp_path / "trained"
    argv = ["train", "--model", "test_resnet", "--dataset", TINY_BRAIN, "--image_size", "64", "--grayscale", "true",
            "--output_dir", str(train_dir), "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]  # fmt: skip
    assert cli_main(argv) == 0
    results = json.loads((train_dir / "results.json").read_text())
    assert results["config"]["label_names"] == list(BRAIN_CLASSES)
    assert 0.0 <= results["final"]["eval_energy_pointing_game"] <= 1.0
    # scripts/per_class_table.py: one evaluation per class gives the class's values of the whole split
    whole = gaze_consistency(load_model(str(train_dir)), load_image_dataset(TINY_BRAIN, "validation"), progress=False)
    rows = {row["class"]: row for row in _per_class_table().score_run(train_dir, "validation")}
    assert list(rows) == list(BRAIN_CLASSES)
    for name, entry in whole.per_class.items():
        assert rows[name]["n_correct"] == entry.n_correct and rows[name]["n_samples"] == entry.n_samples
        assert rows[name]["lcam_paper"] == pytest.approx(entry.values["paper"], nan_ok=True)
        assert rows[name]["lcam_robust"] == pytest.approx(entry.values["robust"], nan_ok=True)

    sweep_dir = tmp_path / "sweep"
    argv = ["sweep", "--backbones", "test_resnet", "--lambdas", "10", "--seeds", "0", "--epochs", "1", "--t0", "0",
            "--t1", "1", "--dataset", TINY_BRAIN, "--image-size", "64", "--batch-size", "4", "--target-layer=-2",
            "--threads", "1", "--output-dir", str(sweep_dir)]  # fmt: skip
    assert cli_main(argv) == 0
    with open(sweep_dir / "runs.csv") as handle:
        (row,) = csv.DictReader(handle)
    assert row["backbone"] == "test_resnet" and 0.0 <= float(row["energy_pointing_game"]) <= 1.0
