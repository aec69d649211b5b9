"""Loading, saving and preprocessing (hf_gazecons.models, hf_gazecons.preprocessing). No downloads."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import transformers
from PIL import Image

from hf_gazecons.errors import ModelLoadError
from hf_gazecons.models import GAZE_STATE_FILE, load_model, save_model


def images(size: int, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def logits(model, x) -> torch.Tensor:
    out = model.eval()(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def pil_image(mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (50, 30), color=(200, 10, 90) if mode == "RGB" else 120)


# ---------------------------------------------------------------------------------------------
# timm architectures
# ---------------------------------------------------------------------------------------------
def test_timm_architecture_with_num_labels():
    loaded = load_model("test_resnet", num_labels=3)
    assert (loaded.library, loaded.spec, loaded.num_labels) == ("timm", "test_resnet", 3)
    assert loaded.label_names == ["0", "1", "2"]
    assert loaded.gaze_state is None
    assert logits(loaded.model, images(64)).shape == (2, 3)
    prep = loaded.preprocessing
    assert (prep.mode, prep.num_channels) == ("RGB", 3)
    assert prep.image_size == tuple(loaded.model.pretrained_cfg["input_size"][1:])


def test_timm_architecture_with_label_names_and_image_size():
    loaded = load_model("test_resnet", label_names=["cat", "dog"], image_size=64)
    assert loaded.label_names == ["cat", "dog"] and loaded.model.num_classes == 2
    prep = loaded.preprocessing
    assert prep.image_size == (64, 64)
    for image in (pil_image("RGB"), pil_image("L")):  # grey images are converted to the model's mode
        for train in (False, True):
            tensor = prep(image, train=train)
            assert tensor.dtype == torch.float32 and tensor.shape == (3, 64, 64)
    # eval: resize the whole image (no crop) and normalise with the model's mean/std
    pixel = prep(pil_image("RGB"))[:, 32, 32]
    expected = (torch.tensor([200, 10, 90]) / 255 - torch.tensor(prep.mean)) / torch.tensor(prep.std)
    torch.testing.assert_close(pixel, expected, atol=1e-4, rtol=0)


def test_label_count_mismatch():
    with pytest.raises(ModelLoadError, match="num_labels=3"):
        load_model("test_resnet", num_labels=3, label_names=["a", "b"])


def test_grayscale_model():
    loaded = load_model("test_resnet", num_labels=2, grayscale=True, image_size=64)
    prep = loaded.preprocessing
    assert (prep.mode, prep.num_channels, prep.mean, prep.std) == ("L", 1, (0.5,), (0.5,))
    assert logits(loaded.model, images(64, channels=1)).shape == (2, 2)
    tensor = prep(pil_image("RGB"))
    assert tensor.shape == (1, 64, 64)
    grey = 0.299 * 200 + 0.587 * 10 + 0.114 * 90  # PIL's L conversion
    torch.testing.assert_close(tensor[0, 32, 32], torch.tensor((grey / 255 - 0.5) / 0.5), atol=0.01, rtol=0)


# ---------------------------------------------------------------------------------------------
# save_model: one folder for hf_gazecons, timm and transformers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    loaded = load_model("test_resnet", label_names=["glioma", "meningioma", "pituitary"], image_size=64)
    directory = tmp_path_factory.mktemp("saved")
    state = {"class_maps": torch.rand(3, 4, 4), "counts": torch.tensor([1, 2, 3])}
    save_model(loaded, directory, gaze_state=state)
    return loaded, directory, state


def test_save_writes_safetensors_and_a_clean_config(saved):
    _, directory, _ = saved
    assert (directory / "model.safetensors").is_file() and (directory / GAZE_STATE_FILE).is_file()
    config = json.loads((directory / "config.json").read_text())
    assert "num_classes" not in config.get("model_args", {})
    assert config["num_classes"] == 3
    assert config["label_names"] == ["glioma", "meningioma", "pituitary"]


def test_round_trip_with_load_model(saved):
    loaded, directory, state = saved
    again = load_model(str(directory))
    assert (again.library, again.spec) == ("timm", str(directory))
    assert again.label_names == loaded.label_names
    assert again.preprocessing.image_size == (64, 64)
    assert again.preprocessing.mean == loaded.preprocessing.mean
    assert torch.equal(logits(again.model, images(64)), logits(loaded.model, images(64)))
    assert again.gaze_state.keys() == state.keys()
    assert all(torch.equal(again.gaze_state[k], v) for k, v in state.items())


def test_saved_folder_loads_with_timm(saved):
    loaded, directory, _ = saved
    model = timm.create_model(f"local-dir:{directory}", pretrained=True)
    assert torch.equal(logits(model, images(64)), logits(loaded.model, images(64)))


def test_saved_folder_loads_with_transformers(saved):
    loaded, directory, _ = saved
    model = transformers.AutoModelForImageClassification.from_pretrained(directory)
    assert type(model).__name__ == "TimmWrapperForImageClassification"
    assert model.config.id2label == dict(enumerate(loaded.label_names))
    torch.testing.assert_close(logits(model, images(64)), logits(loaded.model, images(64)), rtol=0, atol=1e-6)


def test_reload_with_other_labels_replaces_the_head(saved):
    _, directory, _ = saved
    again = load_model(str(directory), num_labels=5)
    assert again.label_names == ["0", "1", "2", "3", "4"]
    assert logits(again.model, images(64)).shape == (2, 5)
    renamed = load_model(str(directory), label_names=["a", "b", "c"])
    assert renamed.label_names == ["a", "b", "c"]


def test_grayscale_round_trip(tmp_path):
    loaded = load_model("test_resnet", num_labels=2, grayscale=True, image_size=64)
    save_model(loaded, tmp_path)
    again = load_model(str(tmp_path))
    prep = again.preprocessing
    assert (prep.mode, prep.mean, prep.std, prep.image_size) == ("L", (0.5,), (0.5,), (64, 64))
    assert again.gaze_state is None
    x = images(64, channels=1)
    assert torch.equal(logits(again.model, x), logits(loaded.model, x))


# ---------------------------------------------------------------------------------------------
# transformers folders
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def transformers_dir(tmp_path):
    torch.manual_seed(0)
    names = {0: "x", 1: "y", 2: "z"}
    config = transformers.ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=3,
        id2label=names,
        label2id={v: k for k, v in names.items()},
    )
    model = transformers.ResNetForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_transformers_folder(transformers_dir):
    model, directory = transformers_dir
    loaded = load_model(str(directory))
    assert (loaded.library, loaded.label_names) == ("transformers", ["x", "y", "z"])
    assert torch.equal(logits(loaded.model, images(64)), logits(model, images(64)))
    assert loaded.preprocessing(pil_image()).shape == (3, *loaded.preprocessing.image_size)


def test_transformers_folder_with_processor_round_trip(transformers_dir, tmp_path_factory):
    model, directory = transformers_dir
    transformers.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=1.0).save_pretrained(directory)
    loaded = load_model(str(directory))
    assert loaded.preprocessing.processor is not None and loaded.preprocessing.image_size == (64, 64)
    assert loaded.preprocessing(pil_image()).shape == (3, 64, 64)
    copy = tmp_path_factory.mktemp("copy")
    save_model(loaded, copy, gaze_state={"class_maps": torch.ones(3, 2, 2)})
    again = load_model(str(copy))
    assert again.label_names == ["x", "y", "z"] and again.preprocessing.image_size == (64, 64)
    assert torch.equal(again.gaze_state["class_maps"], torch.ones(3, 2, 2))
    assert torch.equal(logits(again.model, images(64)), logits(model, images(64)))


def test_transformers_folder_with_new_labels(transformers_dir):
    _, directory = transformers_dir
    loaded = load_model(str(directory), label_names=["p", "q"])
    assert loaded.label_names == ["p", "q"]
    assert loaded.model.config.id2label == {0: "p", 1: "q"}
    assert logits(loaded.model, images(64)).shape == (2, 2)
    with pytest.raises(ModelLoadError, match="grayscale"):
        load_model(str(directory), grayscale=True)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_unknown_spec():
    with pytest.raises(ModelLoadError, match="unknown model 'no_such_architecture_xyz'"):
        load_model("no_such_architecture_xyz")


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path))


def test_folder_with_an_unusable_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-model-type"}))
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(str(tmp_path))
