"""Tiny models, a short training run and expected schemas shared by several test modules."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import timm
import torch
import transformers
from datasets import Dataset, DatasetDict, Image
from torch import nn

from hf_gazecons.localization import LOCALIZATION_SUMS
from hf_gazecons.models import LoadedModel, load_model


def random_test_resnet(label_names: list[str], image_size: int, seed: int = 0) -> LoadedModel:
    """A random-init timm ``test_resnet`` whose Grad-CAM maps are not all zero.

    timm initialises each residual block's last BatchNorm to zero, which makes a fresh model's
    maps vanish; random BatchNorm affine parameters give the metric something to measure.
    """
    torch.manual_seed(seed)
    loaded = load_model("test_resnet", label_names=label_names, image_size=image_size)
    for module in loaded.model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.5)
            nn.init.normal_(module.bias, 0.0, 0.3)
    nn.init.normal_(loaded.model.fc.weight, 0.0, 0.5)
    return loaded


def image_bytes(dataset: Dataset, column: str = "image") -> list[bytes]:
    """The stored (encoded) bytes of each image of ``column``."""
    return [row["bytes"] for row in dataset.cast_column(column, Image(decode=False))[column]]


def assert_same_seed_same_bytes(dsd: DatasetDict, again: DatasetDict, other: DatasetDict) -> None:
    """``again`` (same seed as ``dsd``) is byte-identical, images, masks and labels; ``other`` (another
    seed) is not."""
    for split in ("train", "validation", "test"):
        assert image_bytes(dsd[split]) == image_bytes(again[split])
        assert image_bytes(dsd[split], "mask") == image_bytes(again[split], "mask")
        assert dsd[split]["label"][:] == again[split]["label"][:]
        assert image_bytes(dsd[split]) != image_bytes(other[split])


def tiny_cnn_accuracy(dsd: DatasetDict, seed: int, epochs: int = 8, recalibrate_batchnorm: bool = False) -> float:
    """Validation accuracy of a fresh timm ``test_resnet`` trained briefly on ``dsd["train"]``.

    Adam at lr 3e-3 (the demo's), batches of 16, ``epochs`` epochs, all randomness from ``seed``;
    grayscale or RGB images, scaled to [-1, 1]. With ``recalibrate_batchnorm``, BatchNorm's running
    statistics are recomputed over the training set with the final weights before evaluating: at
    this learning rate they lag behind the weights and the eval-mode accuracy jumps between epochs,
    so this measures what the data lets the network learn, not the lag.
    """
    model = _tiny_cnn(dsd, seed, epochs, recalibrate_batchnorm)
    xv, yv = _tensors(dsd["validation"])
    with torch.no_grad():
        return (model(xv).argmax(1) == yv).float().mean().item()


def _tensors(ds):
    x = torch.from_numpy(np.stack([np.asarray(im) for im in ds["image"]]).astype(np.float32) / 255.0)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return (x - 0.5) / 0.5, torch.tensor(ds["label"][:])


def _tiny_cnn(dsd: DatasetDict, seed: int, epochs: int, recalibrate_batchnorm: bool) -> nn.Module:
    """The network of :func:`tiny_cnn_accuracy`, trained and in eval mode."""
    xt, yt = _tensors(dsd["train"])
    torch.manual_seed(seed)
    num_classes = dsd["train"].features["label"].num_classes
    model = timm.create_model("test_resnet", num_classes=num_classes, in_chans=xt.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(yt)).split(16):
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        if recalibrate_batchnorm:
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.reset_running_stats()
                    module.momentum = None  # a plain average over the batch below
            model(xt)
    return model.eval()


TRAINED_DATA = "builtin:shapes?size=64&n_train=24&n_val=10&n_test=2&planted=0.1"
"""The data of :func:`trained_shapes_model`: 4 classes at 64 px, 40 validation images (4 planted)."""


@functools.lru_cache(maxsize=None)
def trained_shapes_model() -> Path:
    """A timm ``test_resnet`` trained for a few seconds on :data:`TRAINED_DATA` (it tells the classes
    apart, unlike a random one), saved with ``save_model`` (mean/std 0.5, 64 px) once per test
    session into a temporary folder: a model whose ``score`` output has several classes right."""
    from hf_gazecons.data import load_image_dataset
    from hf_gazecons.models import save_model
    from hf_gazecons.preprocessing import STUDY_MEAN_STD, timm_preprocessing

    dsd = load_image_dataset(TRAINED_DATA)
    model = _tiny_cnn(dsd, seed=0, epochs=6, recalibrate_batchnorm=True)
    names = list(dsd["train"].features["label"].names)
    folder = Path(tempfile.mkdtemp(prefix="hf_gazecons_trained_"))
    atexit.register(shutil.rmtree, folder, True)
    preprocessing = timm_preprocessing(model, 64, STUDY_MEAN_STD)
    save_model(LoadedModel(model, preprocessing, names, "timm", "test_resnet"), folder / "model")
    return folder / "model"


_TINY_VIT = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=64, patch_size=16
)

TINY_TRANSFORMERS = {
    # name -> () -> (model class, small config); built fresh by each caller
    "resnet": lambda: (
        transformers.ResNetForImageClassification,
        transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3),
    ),
    "convnext": lambda: (
        transformers.ConvNextForImageClassification,
        transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3),
    ),
    "vit": lambda: (
        transformers.ViTForImageClassification,
        transformers.ViTConfig(**_TINY_VIT, num_labels=3),
    ),
    "deit_distilled": lambda: (
        transformers.DeiTForImageClassificationWithTeacher,
        transformers.DeiTConfig(**_TINY_VIT, num_labels=3),
    ),
    "swin": lambda: (
        transformers.SwinForImageClassification,
        transformers.SwinConfig(
            image_size=64, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=3
        ),
    ),
}


CONSISTENCY_JSON_KEYS = {
    "model",
    "dataset",
    "split",
    "variant",
    "cam_method",
    "grid",
    "target_layer",
    "cam_size",
    "n_samples",
    "n_correct",
    "accuracy",
    "kappa",
    "gaze_consistency",
    "gaze_consistency_by_variant",
    "n_zero_maps",
    "zero_map_share",
    "per_class",
    "localization",
}
"""The keys of ``consistency.json`` / ``ConsistencyResult.to_dict()``."""

LOCALIZATION_SHARES = LOCALIZATION_SUMS[2:]
"""The localisation figures and their references: the means of the sums after the two counts."""
LOCALIZATION_JSON_KEYS = {
    *LOCALIZATION_SHARES, "n", "n_zero_maps", "zero_map_share", "pointing_game_interval", "tolerance", "per_class"
}
"""The keys of ``consistency.json``'s ``localization`` (data with masks)."""


TIME_KEY_ENDINGS = ("_runtime", "_per_second")
"""Keys of a record that name a time (the Trainer's ``eval_runtime``, ``eval_samples_per_second``, ...)."""


def without_times(record):
    """``record`` (nested dicts and lists) without the keys that name a time: what two runs of the same
    command must have in common."""
    if isinstance(record, dict):
        return {k: without_times(v) for k, v in record.items() if not k.endswith(TIME_KEY_ENDINGS)}
    if isinstance(record, list):
        return [without_times(v) for v in record]
    return record
