"""GradCAM against a plain autograd Grad-CAM written here (docs/METHOD.md, section 1), on timm and transformers.

Every model is randomly initialised (no weights can be downloaded) and runs in eval mode on CPU.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, NamedTuple

import pytest
import timm
import torch
import torch.nn.functional as F
import transformers
from tiny import TINY_TRANSFORMERS
from torch import nn

from hf_gazecons.cam import GradCAM, normalize_maps, resize_maps
from hf_gazecons.errors import TargetLayerError
from hf_gazecons.models import load_model, save_model

TOL = 1e-5


# ---------------------------------------------------------------------------------------------
# The reference: hook (or forward_features + forward_head), autograd.grad, eq. (1)-(2), min-max.
# ---------------------------------------------------------------------------------------------
Run = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # x -> (A, logits)


def logits_of(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def run_features(model: nn.Module) -> Run:
    """A = timm ``forward_features(x)``; logits = ``forward_head(A)``."""
    return lambda x: (a := model.forward_features(x), model.forward_head(a))


def run_hooked(model: nn.Module, module: nn.Module, keywords: bool = False) -> Run:
    """A = ``module``'s output, read with a forward hook during ``model``'s forward."""

    def run(x):
        store = {}

        def hook(_module, _args, out):
            tensor = out[0] if isinstance(out, tuple) else out
            store["A"] = tensor
            copy = tensor.clone()  # later in-place layers must not change A
            return (copy, *out[1:]) if isinstance(out, tuple) else copy

        handle = module.register_forward_hook(hook)
        try:
            out = model(pixel_values=x) if keywords else model(x)
        finally:
            handle.remove()
        return store["A"], logits_of(out)

    return run


def as_nchw(tensor: torch.Tensor, layout: str, prefix: int = 0) -> torch.Tensor:
    if layout == "NLC":  # drop prefix tokens, square patch grid (inputs here are square)
        tensor = tensor[:, prefix:]
        side = math.isqrt(tensor.shape[1])
        assert side * side == tensor.shape[1]
        tensor = tensor.reshape(tensor.shape[0], side, side, tensor.shape[2])
        layout = "NHWC"
    return tensor.permute(0, 3, 1, 2) if layout == "NHWC" else tensor


def normalize(cam: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max with eps 1e-8."""
    low, high = cam.amin(dim=(-2, -1), keepdim=True), cam.amax(dim=(-2, -1), keepdim=True)
    return (cam - low) / (high - low + 1e-8)


def reference_raw_cams(run: Run, x, layout="NCHW", prefix=0):
    """ReLU(sum_k alpha_k A^k) for EVERY class, shape (K, B, H', W'), from one forward; and the logits."""
    with torch.enable_grad():
        activations, logits = run(x)
        cams = []
        for k in range(logits.shape[1]):
            (gradients,) = torch.autograd.grad(logits[:, k].sum(), activations, retain_graph=True)
            a = as_nchw(activations.detach(), layout, prefix)
            alpha = as_nchw(gradients, layout, prefix).mean(dim=(2, 3), keepdim=True)
            cams.append(F.relu((alpha * a).sum(dim=1)))
    return torch.stack(cams), logits.detach()


def reference_cam(run: Run, x, targets=None, layout="NCHW", prefix=0):
    """(maps, logits) of plain Grad-CAM; ``targets=None``: the predicted class."""
    cams, logits = reference_raw_cams(run, x, layout, prefix)
    targets = logits.argmax(dim=1) if targets is None else targets
    return normalize(cams[targets, torch.arange(len(x))]), logits


def check_against_reference(cam: GradCAM, run: Run, x, layout="NCHW", prefix=0, grid=None):
    """Maps for the predicted class and for an explicit class per sample equal the reference.

    Randomly initialised networks often give an all-zero map (ReLU of a negative sum) for some
    classes; the explicit targets are the classes with the strongest map, so that comparison is
    never vacuous.
    """
    cams, logits = reference_raw_cams(run, x, layout, prefix)
    strongest = cams.flatten(2).amax(dim=2).argmax(dim=0)
    assert (cams[strongest, torch.arange(len(x))].flatten(1).amax(dim=1) > 0).all(), "all maps are zero"
    for targets in (None, strongest):
        out = cam(x, targets)
        chosen = logits.argmax(dim=1) if targets is None else targets
        expected = normalize(cams[chosen, torch.arange(len(x))])
        if grid is not None:
            assert out.maps.shape == (len(x), *grid)
        assert max_diff(out.maps, expected) <= TOL
        torch.testing.assert_close(out.logits, logits)
        assert 0 <= out.maps.min() and out.maps.max() <= 1
        assert not out.maps.requires_grad and not out.logits.requires_grad
    return out


def images(size: int, batch: int = 2, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# Models (cached: built once per test session, never trained here)
# ---------------------------------------------------------------------------------------------
@functools.cache
def timm_model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=3, **kwargs).eval()


@functools.cache
def hf_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    cls, config = TINY_TRANSFORMERS[kind]()
    return cls(config).eval()


@functools.cache
def timm_wrapper_model() -> nn.Module:
    """A timm resnet18 saved by hf_gazecons and loaded as transformers' TimmWrapperForImageClassification."""
    torch.manual_seed(0)
    loaded = load_model("resnet18", label_names=["a", "b", "c"], image_size=96)
    with tempfile.TemporaryDirectory() as directory:
        save_model(loaded, directory)
        model = transformers.AutoModelForImageClassification.from_pretrained(directory)
    assert type(model).__name__ == "TimmWrapperForImageClassification"
    return model.eval()


class Case(NamedTuple):
    model: nn.Module
    size: int  # square input side
    run: Run  # the reference's view of A and the logits
    layout: str
    prefix: int
    name: str  # expected GradCAM(model).target_name
    grid: tuple[int, int]  # expected map size


def timm_case(name: str, size: int, grid: int, layout: str = "NCHW", **kwargs) -> Case:
    model = timm_model(name, **kwargs)
    prefix = getattr(model, "num_prefix_tokens", 0) if layout == "NLC" else 0
    return Case(model, size, run_features(model), layout, prefix, "forward_features", (grid, grid))


def hf_case(kind: str, module: str, grid: int, layout: str = "NCHW", prefix: int = 0) -> Case:
    model = hf_model(kind)
    run = run_hooked(model, model.get_submodule(module), keywords=True)
    return Case(model, 64, run, layout, prefix, module, (grid, grid))


def vit_case() -> Case:
    model = timm_model("vit_tiny_patch16_224", img_size=64)
    return Case(model, 64, run_hooked(model, model.blocks[-1].norm1), "NLC", 1, "blocks.11.norm1", (4, 4))


def wrapper_case() -> Case:
    model = timm_wrapper_model()
    inner = model.timm_model
    return Case(model, 96, run_features(inner), "NCHW", 0, "timm_model.forward_features", (3, 3))


CASES: dict[str, Callable[[], Case]] = {
    "timm-resnet18": lambda: timm_case("resnet18", 96, 3),
    "timm-efficientnet_b0": lambda: timm_case("efficientnet_b0", 96, 3),
    "timm-convnext_atto": lambda: timm_case("convnext_atto", 96, 3),
    "timm-regnety_002": lambda: timm_case("regnety_002", 96, 3),
    "timm-densenet121": lambda: timm_case("densenet121", 64, 2),
    "timm-vgg11_bn": lambda: timm_case("vgg11_bn", 96, 3, mlp_ratio=1 / 64),  # conv-MLP head, small
    "timm-test_mambaout-NHWC": lambda: timm_case("test_mambaout", 96, 3, layout="NHWC"),
    "timm-vit_tiny-tokens": vit_case,
    "timm-vit_tiny-avgpool": lambda: timm_case(
        "vit_tiny_patch16_224", 64, 4, layout="NLC", img_size=64, global_pool="avg"
    ),
    "hf-resnet": lambda: hf_case("resnet", "resnet.encoder.stages.1", 8),
    "hf-convnext": lambda: hf_case("convnext", "convnext.encoder.stages.1", 8),
    "hf-vit": lambda: hf_case("vit", "vit.layers.1.layernorm_before", 4, "NLC", 1),
    "hf-deit-distilled": lambda: hf_case("deit_distilled", "deit.layers.1.layernorm_before", 4, "NLC", 2),
    "hf-swin": lambda: hf_case("swin", "swin.layernorm", 8, "NLC", 0),
    "hf-timm-wrapper": wrapper_case,
}


def assert_no_param_grads(model: nn.Module) -> None:
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Equality with the reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case_id", CASES)
def test_default_target_matches_reference(case_id):
    case = CASES[case_id]()
    x = images(case.size)
    cam = GradCAM(case.model)
    assert cam.target_name == case.name

    out = check_against_reference(cam, case.run, x, case.layout, case.prefix, case.grid)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, logits_of(case.model(x)))
    assert_no_param_grads(case.model)


NAMED = [  # (model, kwargs, size, target argument, module it resolves to, layout, expected grid)
    ("resnet18", {}, 96, "layer3", "layer3", "NCHW", 6),
    ("resnet18", {}, 96, -1, "layer4", "NCHW", 3),
    ("resnet18", {}, 96, -2, "layer3", "NCHW", 6),
    ("resnet18", {}, 96, "act1", "act1", "NCHW", 48),  # in-place ReLU output followed by a max-pool
    ("convnext_atto", {}, 96, "stages.2", "stages.2", "NCHW", 6),
    ("convnext_atto", {}, 96, -2, "stages.2", "NCHW", 6),
    ("test_mambaout", {}, 96, -2, "stages.2", "NHWC", 6),
    ("test_mambaout", {}, 96, "stages.1", "stages.1", "NHWC", 12),
    # a Conv2d (NCHW output) inside a channels-last model
    ("test_mambaout", {}, 96, "stem.conv1", "stem.conv1", "NCHW", 48),
    # (not -1: only the class token of the last block reaches the head, patch gradients are 0)
    ("vit_tiny_patch16_224", {"img_size": 64}, 64, -2, "blocks.10", "NLC", 4),
    # patch embedding tokens carry no class token
    ("vit_tiny_patch16_224", {"img_size": 64}, 64, "patch_embed", "patch_embed", "NLC0", 4),
]


@pytest.mark.parametrize(
    "name,kwargs,size,target,module,layout,grid", NAMED, ids=[f"{n}-{t}" for n, _, _, t, *_ in NAMED]
)
def test_named_and_stage_targets_match_reference(name, kwargs, size, target, module, layout, grid):
    model = timm_model(name, **kwargs)
    x = images(size)
    cam = GradCAM(model, target)
    assert cam.target_name == module
    prefix = 1 if layout == "NLC" else 0
    layout = "NLC" if layout == "NLC0" else layout
    check_against_reference(cam, run_hooked(model, model.get_submodule(module)), x, layout, prefix, (grid, grid))


@pytest.mark.parametrize("target", ["layer3", -2, "timm_model.layer3"])
def test_timm_wrapper_named_targets(target):
    """Stage names of the inner timm model, and the wrapper's own module names, both work."""
    model = timm_wrapper_model()
    x = images(96)
    cam = GradCAM(model, target)
    assert cam.target_name == "timm_model.layer3"
    check_against_reference(cam, run_hooked(model, model.timm_model.layer3, keywords=True), x, grid=(6, 6))


class Plain(nn.Module):
    """No timm/transformers conventions; an in-place ReLU right after the target."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True)
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_plain_module_with_named_layer():
    torch.manual_seed(0)
    model = Plain().eval()
    x = images(16)
    cam = GradCAM(model, "features.2")
    check_against_reference(cam, run_hooked(model, model.features[2]), x, grid=(8, 8))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_error_target_without_spatial_map():
    cam = GradCAM(timm_model("resnet18"), "fc")
    with pytest.raises(TargetLayerError, match=r"'fc'.*\(2, 3\)"):
        cam(images(64))
    assert torch.is_grad_enabled()


def test_error_one_by_one_map():
    cam = GradCAM(timm_model("resnet18"))
    with pytest.raises(TargetLayerError, match=r"'forward_features'.*\(2, 512, 1, 1\)"):
        cam(images(32))
    assert torch.is_grad_enabled()


def test_error_unknown_module_name_lists_similar_names():
    with pytest.raises(TargetLayerError, match="layer3.conv1") as info:
        GradCAM(timm_model("resnet18"), "layer3.conv1")
    assert "similar names" in str(info.value) and "layer3.0.conv1" in str(info.value)


@pytest.mark.parametrize("index", [5, -6, 100])
def test_error_stage_index_out_of_range(index):
    with pytest.raises(TargetLayerError, match=f"stage index {index} is out of range"):
        GradCAM(timm_model("resnet18"), index)


def test_error_plain_module_needs_a_target():
    with pytest.raises(TargetLayerError, match="features.2"):  # suggests its last convolution
        GradCAM(Plain())
    with pytest.raises(TargetLayerError, match="feature_info"):
        GradCAM(Plain(), -1)


def test_second_order_needs_differentiable():
    with pytest.raises(ValueError):
        GradCAM(Plain(), "features.2", second_order=True)


# ---------------------------------------------------------------------------------------------
# Scoring mode: no parameter gradient, no graph through the trunk
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target,trunk,head", [(None, "layer1", "fc"), ("layer3", "layer2", "layer4")])
def test_scoring_mode_builds_no_graph_before_target(target, trunk, head):
    model = timm_model("resnet18")
    seen = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: seen.__setitem__(name, out.requires_grad)
        )
        for name in (trunk, head)
    ]
    try:
        out = GradCAM(model, target)(images(64))
    finally:
        for handle in handles:
            handle.remove()
    assert seen == {trunk: False, head: True}
    assert out.maps.shape == ((2, 2, 2) if target is None else (2, 4, 4))
    assert not out.maps.requires_grad and not out.logits.requires_grad
    assert_no_param_grads(model)


def test_scoring_mode_inside_no_grad():
    model = timm_model("resnet18")
    x = images(64)
    expected, _ = reference_cam(run_features(model), x)
    with torch.no_grad():  # e.g. inside an evaluation loop
        out = GradCAM(model)(x)
        assert not torch.is_grad_enabled()
    assert max_diff(out.maps, expected) <= TOL


# ---------------------------------------------------------------------------------------------
# Differentiable mode
# ---------------------------------------------------------------------------------------------
def fresh_model() -> nn.Module:
    """A small timm ResNet; residual branches not zero-initialised (so they get gradient); SiLU, so that
    the class score's gradient w.r.t. A is not piecewise constant and second order matters before A."""
    torch.manual_seed(0)
    return timm.create_model(
        "test_resnet", pretrained=False, num_classes=3, zero_init_last=False, act_layer="silu"
    ).eval()


def param_grads(model: nn.Module) -> dict[str, torch.Tensor | None]:
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


def manual_differentiable_cam(model, x, targets, create_graph: bool) -> torch.Tensor:
    """Maps with a graph to the parameters through A; alpha a constant unless ``create_graph``."""
    activations, logits = run_hooked(model, model.layer3)(x)
    score = logits[torch.arange(len(x)), targets].sum()
    (gradients,) = torch.autograd.grad(score, activations, retain_graph=True, create_graph=create_graph)
    alpha = gradients.mean(dim=(2, 3), keepdim=True)
    return normalize(F.relu((alpha * activations).sum(dim=1)))


def assert_grads_equal(got: dict, expected: dict) -> None:
    """Equal to 1e-4 of each parameter's gradient scale, and of 1e-5 of the largest one (a bias
    before a train-mode BatchNorm has a zero gradient up to rounding)."""
    assert got.keys() == expected.keys()
    largest = max(g.abs().max().item() for g in expected.values() if g is not None)
    for name in got:
        assert (got[name] is None) == (expected[name] is None), name
        if got[name] is not None:
            scale = expected[name].abs().max().item()
            assert max_diff(got[name], expected[name]) <= 1e-4 * scale + 1e-5 * largest + 1e-10, name


def test_differentiable_first_and_second_order():
    model = fresh_model()
    x = images(64)
    cams, _ = reference_raw_cams(run_hooked(model, model.layer3), x)
    targets = cams.flatten(2).amax(dim=2).argmax(dim=0)  # classes with a non-zero map
    model.zero_grad(set_to_none=True)
    grads = {}
    for second_order in (False, True):
        out = GradCAM(model, "layer3", differentiable=True, second_order=second_order)(x, targets)
        assert out.maps.requires_grad and out.logits.requires_grad
        with torch.no_grad():
            torch.testing.assert_close(out.logits, model(x))
            assert max_diff(out.maps, normalize(cams[targets, torch.arange(2)])) <= TOL
        out.maps.sum().backward()
        grads[second_order] = param_grads(model)
        manual_differentiable_cam(model, x, targets, create_graph=second_order).sum().backward()
        assert_grads_equal(grads[second_order], param_grads(model))

    first, second = grads[False], grads[True]
    # every parameter before the target receives a gradient, the stem included
    before = [n for n in first if n.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3")]
    assert all(first[n] is not None for n in before)
    for name in ("conv1.0.weight", "layer1.0.conv1.weight", "layer3.0.conv2.weight"):
        assert first[name].abs().sum() > 0, name
    # first order: alpha is a constant, so nothing after the target gets a gradient
    assert all(first[n] is None for n in first if n.startswith(("layer4", "fc")))
    # second order differentiates alpha too: layers after the target get one, earlier ones change
    assert second["fc.weight"] is not None and second["fc.weight"].abs().sum() > 0
    assert max_diff(first["conv1.0.weight"], second["conv1.0.weight"]) > 1e-3 * first["conv1.0.weight"].abs().max()


def test_differentiable_default_target_reaches_stem():
    model = fresh_model()
    x = images(128)
    cams, _ = reference_raw_cams(run_features(model), x)
    targets = cams.flatten(2).amax(dim=2).argmax(dim=0)
    out = GradCAM(model, differentiable=True)(x, targets)
    assert max_diff(out.maps.detach(), normalize(cams[targets, torch.arange(2)])) <= TOL
    out.maps.sum().backward()
    assert model.conv1[0].weight.grad is not None and model.conv1[0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Train mode: every sample's map from its own score, also through train-mode BatchNorm
# ---------------------------------------------------------------------------------------------
def train_mode_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        name, pretrained=False, num_classes=4, **({"zero_init_last": False} if "resnet" in name else {})
    )
    for module in model.modules():  # random affine BatchNorm: maps that are not all zero
        if isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.5)
            nn.init.normal_(module.bias, 0.0, 0.2)
    return model.train()


def per_sample_loop_gradients(
    model: nn.Module, module: nn.Module | None, x, targets, create_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The obvious computation: one train-mode forward of the batch, then for each sample i
    ``autograd.grad(y_i[t_i], A)[i]`` alone; returns ``A`` and the stacked per-sample gradients."""
    run = run_features(model) if module is None else run_hooked(model, module)
    activations, logits = run(x)
    gradients = []
    for i in range(len(x)):
        (gradient,) = torch.autograd.grad(
            logits[i, targets[i]], activations, retain_graph=True, create_graph=create_graph
        )
        gradients.append(gradient[i : i + 1])
    return activations, torch.cat(gradients)


def per_sample_loop_maps(model: nn.Module, module: nn.Module | None, x, targets, create_graph: bool) -> torch.Tensor:
    """Grad-CAM from :func:`per_sample_loop_gradients` (alpha a constant unless ``create_graph``)."""
    activations, gradients = per_sample_loop_gradients(model, module, x, targets, create_graph)
    alpha = gradients.mean(dim=(2, 3), keepdim=True)
    return normalize(F.relu((alpha * activations).sum(dim=1)))


@contextmanager
def held_batch_norms(model: nn.Module, module: nn.Module, x) -> Iterator[None]:
    """The held-statistics definition: pass 1 runs the batch and records, with their graph, the
    batch mean and biased variance at the input of every BatchNorm that runs after ``module``;
    inside, those layers normalise by the recorded statistics (the formula written here, then the
    layer's activation if it has one), so that they do not depend on a later pass's ``A``.
    Everything still depends on the parameters (through pass 1), as the training loss does."""
    statistics, after = {}, []

    def record(norm, args):
        if after:
            statistics[norm] = (args[0].mean(dim=(0, 2, 3)), args[0].var(dim=(0, 2, 3), unbiased=False))

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [module.register_forward_hook(lambda *_: after.append(True))]
    handles += [norm.register_forward_pre_hook(record) for norm in norms]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()

    def held(norm):
        def forward(inputs):
            mean, var = (s[:, None, None] for s in statistics[norm])
            out = (inputs - mean) * torch.rsqrt(var + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]
            return norm.act(norm.drop(out)) if hasattr(norm, "act") else out

        return forward

    for norm in statistics:
        norm.forward = held(norm)
    try:
        yield
    finally:
        for norm in statistics:
            del norm.forward


def held_loop_maps(model: nn.Module, module: nn.Module, x, targets, create_graph: bool) -> torch.Tensor:
    """The held-statistics maps, from their definition: :func:`held_batch_norms`, then a per-sample
    loop over a second pass takes ``autograd.grad(y_i, A)[i]``."""
    with held_batch_norms(model, module, x):
        return per_sample_loop_maps(model, module, x, targets, create_graph)


@pytest.mark.parametrize("second_order", [False, True], ids=["first-order", "second-order"])
@pytest.mark.parametrize("target", [-2, None], ids=["stage-2", "default"])
@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet"])
@pytest.mark.parametrize("per_sample", ["exact", "held_stats"])
def test_train_mode_maps_equal_a_per_sample_loop(per_sample, name, target, second_order):
    """``exact``: the per-sample loop of the full derivative; ``held_stats``: the loop with the batch
    statistics after the target held (the same at the default target, where none follows)."""
    model = train_mode_model(name)
    x, targets = images(64, batch=6, seed=1), torch.tensor([0, 1, 2, 3, 0, 1])
    cam = GradCAM(model, target, differentiable=True, second_order=second_order, per_sample=per_sample)
    weights = torch.rand(6, 4, 4, generator=torch.Generator().manual_seed(2))  # a loss of the maps
    out = cam(x, targets)
    assert cam.per_sample_path == ("independent" if target is None else per_sample)
    assert out.maps.shape == (6, 4, 4) if target == -2 else out.maps.shape[0] == 6
    got_maps = out.maps.detach()
    (out.maps * weights[:, : out.maps.shape[1], : out.maps.shape[2]]).sum().backward()
    got = param_grads(model)

    module = None if target is None else model.get_submodule(cam.target_name)
    reference = held_loop_maps if per_sample == "held_stats" and module is not None else per_sample_loop_maps
    expected_maps = reference(model, module, x, targets, create_graph=second_order)
    assert expected_maps.flatten(1).amax(dim=1).gt(0).sum() >= 4, "too many all-zero maps to compare"
    assert max_diff(got_maps, expected_maps.detach()) <= TOL
    (expected_maps * weights[:, : out.maps.shape[1], : out.maps.shape[2]]).sum().backward()
    assert_grads_equal(got, param_grads(model))


def test_held_statistics_differ_from_the_exact_maps_by_order_one_over_the_batch():
    """The two definitions are different numbers at stage -2 (so each test above tests its own)."""
    model = train_mode_model("test_resnet")
    x, targets = images(64, batch=6, seed=1), torch.tensor([0, 1, 2, 3, 0, 1])
    held = GradCAM(model, -2, per_sample="held_stats")(x, targets).maps
    exact = GradCAM(model, -2, per_sample="exact")(x, targets).maps
    assert 1e-3 < max_diff(held, exact) < 0.5


def test_batch_summed_gradients_would_mix_samples_at_stage_minus_2():
    """Why the per-sample path exists: the summed-score shortcut differs from the loop here."""
    model = train_mode_model("test_resnet")
    x, targets = images(64, batch=6, seed=1), torch.tensor([0, 1, 2, 3, 0, 1])
    activations, logits = run_hooked(model, model.layer3)(x)
    (summed,) = torch.autograd.grad(logits[torch.arange(6), targets].sum(), activations)
    shortcut = normalize(F.relu((summed.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)))
    exact = per_sample_loop_maps(model, model.layer3, x, targets, create_graph=False)
    assert max_diff(shortcut.detach(), exact.detach()) > 1e-2
    assert max_diff(GradCAM(model, -2, per_sample="exact")(x, targets).maps, exact.detach()) <= TOL  # scoring too
    held = held_loop_maps(model, model.layer3, x, targets, create_graph=False)
    assert max_diff(GradCAM(model, -2)(x, targets).maps, held.detach()) <= TOL  # the default mode


# ---------------------------------------------------------------------------------------------
# The model is left as found
# ---------------------------------------------------------------------------------------------
def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("target", [None, "layer3", -1])
def test_model_left_unchanged_after_many_calls(train, target):
    model = fresh_model().train(train)
    fired = []
    model.layer3.register_forward_hook(lambda *args: fired.append(1))  # a user's hook stays
    hooks, modes = hook_count(model), [m.training for m in model.modules()]
    cams = [GradCAM(model, target), GradCAM(model, target, differentiable=True)]
    x = images(64)
    for i in range(50):  # scoring and differentiable calls, alternating
        out = cams[i % 2](x)
        assert out.maps.shape[0] == 2
    assert hook_count(model) == hooks
    assert "forward_features" not in vars(model)
    assert [m.training for m in model.modules()] == modes
    assert len(fired) == 50 and torch.is_grad_enabled()


@pytest.mark.parametrize("target", [None, "layer3"])
def test_model_left_unchanged_after_a_failing_forward(target):
    model = fresh_model()
    hooks = hook_count(model)
    with pytest.raises(RuntimeError):
        GradCAM(model, target)(images(64, channels=1))  # wrong channel count: the stem fails
    assert hook_count(model) == hooks and "forward_features" not in vars(model)
    assert torch.is_grad_enabled()


# ---------------------------------------------------------------------------------------------
# normalize_maps / resize_maps
# ---------------------------------------------------------------------------------------------
def test_normalize_maps():
    cam = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 10 - 3
    maps = normalize_maps(cam)
    assert maps.shape == cam.shape
    assert torch.allclose(maps.amin(dim=(1, 2)), torch.zeros(3))
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3), atol=1e-6)
    assert torch.equal(normalize_maps(torch.full((2, 4, 4), 3.5)), torch.zeros(2, 4, 4))
    # per sample: scaling one sample does not change the other
    scaled = cam.clone()
    scaled[0] *= 100
    assert torch.allclose(normalize_maps(scaled)[1:], maps[1:])


def test_resize_maps():
    maps = normalize_maps(torch.rand(2, 4, 6, generator=torch.Generator().manual_seed(0)))
    big = resize_maps(maps, (32, 48))
    assert big.shape == (2, 32, 48)
    assert 0 <= big.min() and big.max() <= 1
    assert resize_maps(maps, (4, 6)) is maps
    torch.testing.assert_close(resize_maps(torch.full((1, 3, 3), 0.25), (10, 7)), torch.full((1, 10, 7), 0.25))
    torch.testing.assert_close(big.mean(dim=(1, 2)), maps.mean(dim=(1, 2)), atol=0.02, rtol=0)


def test_resize_maps_averages_areas_when_shrinking():
    maps = torch.rand(3, 56, 56, generator=torch.Generator().manual_seed(0))
    small = resize_maps(maps, (7, 7))
    torch.testing.assert_close(small, maps.reshape(3, 7, 8, 7, 8).mean(dim=(2, 4)))  # 8x8 block means
    torch.testing.assert_close(resize_maps(maps, (7, 112)).shape, (3, 7, 112))  # shrink one side, grow the other


def blob(size: int, cx: float, cy: float, radius: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2))[None]


def test_common_grid_is_stable_under_a_one_pixel_shift():
    """A 56x56 map's 7x7 grid barely moves when its blob moves by one pixel (point sampling
    would read 49 of 3136 pixels and jump)."""
    for shift in (0.5, 1.0, 1.5):
        a, b = blob(56, 20.0, 30.0, 3.0), blob(56, 20.0 + shift, 30.0, 3.0)
        ga, gb = resize_maps(a, (7, 7)), resize_maps(b, (7, 7))
        assert (ga - gb).abs().max() <= 0.25 * shift * ga.max()
        assert abs(ga.max() - gb.max()) <= 0.1 * ga.max()
