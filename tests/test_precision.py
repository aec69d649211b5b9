"""Mixed precision, compiled and channels-last models give the float32 eager maps (or fail at once).

bf16 autocast runs on CPU; fp16 paths that need a GPU are covered by ``scripts/gpu_check.py``.
"""

from __future__ import annotations

import functools

import pytest
import timm
import torch
import torch.nn.functional as F

from hf_gazecons.cam import CAM, GradCAM, is_compiled
from hf_gazecons.data import ImageClassificationDataset, load_image_dataset
from hf_gazecons.errors import GazeConsError, TargetLayerError
from hf_gazecons.metric import gaze_consistency
from hf_gazecons.models import load_model
from hf_gazecons.trainer import GazeConsistencyTrainingArguments

SIZE = 128
SHAPES = f"builtin:shapes?size={SIZE}&n_train=1&n_val=4&n_test=1"


@functools.cache
def shapes_batch(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    data = load_image_dataset(SHAPES, "validation")
    loaded = load_model("test_resnet", label_names=data.features["label"].names, image_size=size)
    items = ImageClassificationDataset(data, loaded.preprocessing)
    x = torch.stack([items[i]["pixel_values"] for i in range(len(items))])
    y = torch.tensor([items[i]["labels"] for i in range(len(items))])
    return x, y, list(data.features["label"].names)


@functools.cache
def fitted(name: str) -> torch.nn.Module:
    """A few Adam steps on the shapes batch: maps with structure (a random network's maps are
    nearly flat, and rounding moves the normalised values of a flat map arbitrarily)."""
    x, y, names = shapes_batch()
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=len(names))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(8):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_bf16_autocast_maps_and_metric_match_float32(name):
    model = fitted(name)
    x, y, names = shapes_batch()
    reference = GradCAM(model)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = GradCAM(model)(x, reference.logits.argmax(dim=1))
    assert mixed.maps.dtype == torch.float32
    assert (reference.maps.flatten(1).amax(dim=1) > 0).all(), "a collapsed map: the comparison would be vacuous"
    assert (mixed.maps - reference.maps).abs().max() <= 0.02
    full = gaze_consistency(model, [(x, y)], label_names=names, progress=False)
    half = gaze_consistency(model, [(x, y)], label_names=names, progress=False, dtype=torch.bfloat16)
    assert full.value is not None and half.value == pytest.approx(full.value, rel=0.02)
    assert half.accuracy == pytest.approx(full.accuracy)


@functools.cache
def compiled_test_resnet() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=4, zero_init_last=False).eval()
    return model, torch.compile(model)


@pytest.mark.parametrize("target", [None, -2])
def test_a_compiled_model_scores_like_the_eager_one(target):
    model, compiled = compiled_test_resnet()
    assert is_compiled(compiled) and not is_compiled(model)
    x, y, names = shapes_batch()
    eager = GradCAM(model, target)(x)
    for _ in range(2):  # the second call runs the cached compiled code
        out = GradCAM(compiled, target)(x)
        assert (out.maps - eager.maps).abs().max() <= 1e-4
        torch.testing.assert_close(out.logits, eager.logits, rtol=1e-4, atol=1e-5)
    result = gaze_consistency(compiled, [(x, y)], target=target, label_names=names, progress=False)
    expected = gaze_consistency(model, [(x, y)], target=target, label_names=names, progress=False)
    assert result.values == pytest.approx(expected.values, abs=1e-6)


def test_differentiable_grad_cam_and_training_refuse_a_compiled_model_at_once(tmp_path):
    _, compiled = compiled_test_resnet()
    with pytest.raises(TargetLayerError, match="eager model"):
        GradCAM(compiled, differentiable=True)
    with pytest.raises(GazeConsError, match="--torch_compile is not supported"):
        GazeConsistencyTrainingArguments(str(tmp_path), torch_compile=True, report_to="none")


@pytest.mark.parametrize("name, target", [("test_resnet", None), ("test_resnet", -2), ("test_convnext", None)])
def test_channels_last_models_and_inputs_give_the_same_maps(name, target):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4).eval()
    x, _, _ = shapes_batch()
    expected = GradCAM(model, target)(x)
    model = model.to(memory_format=torch.channels_last)
    for inputs in (x, x.contiguous(memory_format=torch.channels_last)):
        out = GradCAM(model, target)(inputs)
        assert (out.maps - expected.maps).abs().max() <= 1e-5


@pytest.mark.parametrize("second_order", [False, True], ids=["first-order", "second-order"])
def test_bf16_training_keeps_maps_ema_and_penalty_in_float32(tmp_path, second_order):
    """``--bf16`` on a CPU-only machine: the forward runs under bf16 autocast, the penalty's maps,
    EMA and loss stay float32, and the run matches float32 training closely."""
    from functools import partial

    from hf_gazecons.trainer import GazeConsistencyTrainer

    data = load_image_dataset("builtin:shapes?num_classes=2&size=64&n_train=8&n_val=4&n_test=1")
    names = data["train"].features["label"].names
    penalties = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        loaded = load_model("test_resnet", label_names=names, image_size=64)
        prep = loaded.preprocessing
        args = GazeConsistencyTrainingArguments(
            str(tmp_path / f"bf16-{bf16}"),
            bf16=bf16,
            lambda_max=5.0,
            t0=0,
            t1=1,
            num_train_epochs=1,
            per_device_train_batch_size=8,
            target_layer="-2",
            second_order=second_order,
            eval_strategy="no",
            save_strategy="no",
            lr_scheduler_type="constant",
            report_to="none",
            disable_tqdm=True,
        )
        assert args.use_cpu or not bf16  # set for bf16 without an accelerator
        trainer = GazeConsistencyTrainer(
            model=loaded.model,
            args=args,
            train_dataset=ImageClassificationDataset(data["train"], partial(prep, train=True)),
            label_names=names,
        )
        seen = {}
        cam_call = CAM.__call__  # the trainer's maps (GradCAM is CAM's gradcam case)

        def spy(self, *a, **k):
            out = cam_call(self, *a, **k)
            seen.update(logits=out.logits.dtype, maps=out.maps.dtype, raw=out.raw.dtype)
            return out

        CAM.__call__ = spy
        hook = loaded.model.layer3.register_forward_hook(lambda m, i, o: seen.update(activations=o.dtype))
        try:
            trainer.train()
        finally:
            CAM.__call__ = cam_call
            hook.remove()
        assert seen["maps"] == seen["raw"] == torch.float32
        assert seen["activations"] == (torch.bfloat16 if bf16 else torch.float32)  # the forward ran in bf16
        assert trainer.regularizer.ema.dtype == torch.float32
        logs = [e for e in trainer.state.log_history if "penalty" in e]
        penalties[bf16] = logs[-1]["penalty"]
        assert all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)
    assert penalties[True] == pytest.approx(penalties[False], rel=0.1, abs=1e-3)
