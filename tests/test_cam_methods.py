"""The CAM family against the peers' own code (torchcam 0.5.0, pytorch-grad-cam 1.5.7), the
registry, the multi-method forward, and the penalty's gradient under each differentiable method.

Every model is randomly initialised (BatchNorm affine parameters randomised so that maps are not
all zero) and runs in eval mode on CPU. Maps are compared at the target's resolution after the
ReLU and the min-max: torchcam's extractors return exactly that (eps 1e-8, as ours);
pytorch-grad-cam's output is resized to the input and min-maxed with eps 1e-7, so its method-specific
code (``get_cam_image``, which calls ``get_cam_weights``) is run on the activations and gradients it
captured itself, followed by its ``scale_cam_image`` without a target size.

Differences from the peers that are compensated here, each stated where it is used:

* Grad-CAM++: torchcam 0.5.0's ``GradCAMpp`` divides its alpha on a copy (``alpha[mask].div_``),
  so its weights are ``sum_ij G^2 relu(G)``, not the paper's; it is tested for that, and ours is
  tested against pytorch-grad-cam's ``GradCAMPlusPlus``, whose ``1e-6`` in the denominator is made
  negligible by giving its own code ``(A / c, c G)``, which leaves the paper's formula unchanged.
* Eigen-CAM: a singular vector's sign is arbitrary; ours fixes it (``sum_k v_k >= 0``), so
  pytorch-grad-cam's projection is compared up to its sign.
* Score-CAM: torchcam subtracts the unmasked input's score before the softmax, which a softmax
  ignores; nothing to compensate.

A test that needs a peer skips, with the reason, where the peers extra is not installed; the
others (the registry, the per-sample gradients, the penalty's gradient) run without it.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Callable, NamedTuple

import numpy as np
import pytest
import timm
import torch
from test_cam import held_batch_norms, per_sample_loop_gradients, train_mode_model
from tiny import TINY_TRANSFORMERS
from torch import nn

import hf_gazecons
from hf_gazecons.batching import eval_mode
from hf_gazecons.cam import CAM, GradCAM
from hf_gazecons.cam_family import CAMInputs, cam_methods, get_cam_method, register
from hf_gazecons.deviation import per_sample_deviation
from hf_gazecons.errors import UsageError

TOL = 1e-4
GRADIENT_METHODS = cam_methods(differentiable=True)



def peer(module: str):
    """A peer's module, or a skip of the test that needs it (the other tests here need no peer)."""
    return pytest.importorskip(module, reason="the peers extra (pip install -e '.[peers]') is not installed")


# ---------------------------------------------------------------------------------------------
# Models: two timm CNNs and a transformers classifier; the peers hook the same module
# ---------------------------------------------------------------------------------------------
class Logits(nn.Module):
    """A transformers classifier as a module that returns its logits (what the peers call)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(module.weight, 1.0, 0.5)
            nn.init.normal_(module.bias, 0.0, 0.3)
    return model.eval()


class Case(NamedTuple):
    model: nn.Module  # what ours explains
    peer_model: nn.Module  # what the peers explain (the same network)
    target: str | None  # our target argument
    module: str  # the peers' target module (name in peer_model)
    size: int


@functools.cache
def timm_net(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"zero_init_last": False} if "resnet" in name else {}
    return randomize_batchnorm(timm.create_model(name, pretrained=False, num_classes=3, **kwargs))


@functools.cache
def hf_net() -> nn.Module:
    torch.manual_seed(0)
    cls, config = TINY_TRANSFORMERS["resnet"]()
    return randomize_batchnorm(cls(config))


CASES: dict[str, Callable[[], Case]] = {
    # the map the head pools (4x4 at 128 px), and an earlier stage, where the gradient varies over positions
    "timm-test_resnet": lambda: Case(timm_net("test_resnet"), timm_net("test_resnet"), None, "layer4", 128),
    "timm-test_resnet-layer3": lambda: Case(timm_net("test_resnet"), timm_net("test_resnet"), "layer3", "layer3", 128),
    "timm-test_efficientnet": lambda: Case(
        timm_net("test_efficientnet"), timm_net("test_efficientnet"), None, "bn2", 128
    ),
    "timm-test_efficientnet-stage-2": lambda: Case(
        timm_net("test_efficientnet"), timm_net("test_efficientnet"), "blocks.2", "blocks.2", 128
    ),
    "hf-resnet": lambda: Case(
        hf_net(), Logits(hf_net()), "resnet.encoder.stages.1", "model.resnet.encoder.stages.1", 64
    ),
}


def images(size: int, batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def strongest_targets(case: Case, x: torch.Tensor, method: str) -> torch.Tensor:
    """Per sample, the class whose map under ``method`` has the largest maximum before the ReLU:
    a comparison that is never between two all-zero maps."""
    cam = CAM(case.model, case.target, method)
    raws = torch.stack([cam(x, torch.full((len(x),), k)).raw for k in range(3)])
    return raws.flatten(2).amax(dim=2).argmax(dim=0)


def ours(case: Case, x: torch.Tensor, method: str, targets: torch.Tensor) -> torch.Tensor:
    maps = CAM(case.model, case.target, method)(x, targets).maps
    assert (maps.flatten(1).amax(dim=1) > 0).all(), "an all-zero map: the comparison would be vacuous"
    return maps


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


# ---------------------------------------------------------------------------------------------
# The peers' own code
# ---------------------------------------------------------------------------------------------
def torchcam_maps(case: Case, x: torch.Tensor, extractor: type, targets: torch.Tensor, **kwargs) -> torch.Tensor:
    with extractor(case.peer_model, case.module, input_shape=tuple(x.shape[1:]), **kwargs) as cam:
        scores = case.peer_model(x)
        (maps,) = cam(class_idx=targets.tolist(), scores=scores)
    return maps


def pgc_maps(case: Case, x: torch.Tensor, method: type, targets: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    """pytorch-grad-cam's map at the target's resolution (its get_cam_image on the activations and
    gradients it captured, then its ReLU and scale_cam_image); ``scale`` c feeds its code
    ``(A / c, c G)`` (see the module docstring). Returns the raw map (before the ReLU) and the map."""
    model_targets, image = peer("pytorch_grad_cam.utils.model_targets"), peer("pytorch_grad_cam.utils.image")
    module = case.peer_model.get_submodule(case.module)
    chosen = [model_targets.ClassifierOutputTarget(int(c)) for c in targets]
    with method(model=case.peer_model, target_layers=[module]) as cam:
        cam(input_tensor=x, targets=chosen)
        store = cam.activations_and_grads
        activations = store.activations[0].numpy()
        gradients = store.gradients[0].numpy() if store.gradients else None
        if gradients is not None:
            activations, gradients = activations / scale, gradients * scale
        raw = cam.get_cam_image(x, module, chosen, activations, gradients, eigen_smooth=False)
    return raw, image.scale_cam_image(np.maximum(raw, 0))


TORCHCAM = {"gradcam": "GradCAM", "xgradcam": "XGradCAM", "layercam": "LayerCAM"}
PGC = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "gradcam_elementwise": "GradCAMElementWise",
}


@pytest.mark.parametrize("case_id", CASES)
@pytest.mark.parametrize("method", list(TORCHCAM))
def test_gradient_methods_match_torchcam(case_id, method):
    torchcam_methods = peer("torchcam.methods")

    case = CASES[case_id]()
    x = images(case.size)
    targets = strongest_targets(case, x, method)
    theirs = torchcam_maps(case, x, getattr(torchcam_methods, TORCHCAM[method]), targets)
    assert max_diff(ours(case, x, method, targets), theirs) <= TOL


@pytest.mark.parametrize("case_id", CASES)
@pytest.mark.parametrize("method", list(PGC))
def test_gradient_methods_match_pytorch_grad_cam(case_id, method):
    case = CASES[case_id]()
    x = images(case.size)
    targets = strongest_targets(case, x, method)
    scale = 1e4 if method == "gradcampp" else 1.0  # its 1e-6 made negligible, the formula unchanged
    _, expected = pgc_maps(case, x, getattr(peer("pytorch_grad_cam"), PGC[method]), targets, scale)
    assert max_diff(ours(case, x, method, targets), torch.from_numpy(expected)) <= TOL


def test_gradcampp_differs_from_torchcam_which_skips_its_alpha_division():
    """torchcam 0.5.0's GradCAMpp equals sum_ij G^2 relu(G) weights (its alpha division acts on a
    copy); ours follows the paper (and pytorch-grad-cam), so they differ."""
    torchcam_methods = peer("torchcam.methods")

    case = CASES["timm-test_resnet-layer3"]()
    x = images(case.size)
    targets = strongest_targets(case, x, "gradcampp")
    theirs = torchcam_maps(case, x, torchcam_methods.GradCAMpp, targets)
    activations, gradients = captured(case, x, targets)
    numerator_only = ((gradients.pow(2) * gradients.relu()).sum(dim=(2, 3), keepdim=True) * activations).sum(dim=1)
    assert max_diff(normalize(numerator_only.relu()), theirs) <= TOL
    assert max_diff(ours(case, x, "gradcampp", targets), theirs) > 0.01


def test_gradcampp_is_the_papers_formula_without_epsilon():
    """alpha = G^2 / (2 G^2 + sum A G^3), written plainly, where G > 0."""
    case = CASES["timm-test_resnet-layer3"]()
    x = images(case.size)
    targets = strongest_targets(case, x, "gradcampp")
    a, g = (t.double() for t in captured(case, x, targets))
    g2, g3 = g.pow(2), g.pow(3)
    alpha = torch.where(g > 0, g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3), torch.zeros_like(g))
    weights = (alpha * g.relu()).sum(dim=(2, 3), keepdim=True)
    expected = normalize((weights * a).sum(dim=1).relu())
    assert max_diff(ours(case, x, "gradcampp", targets), expected) <= 1e-5


@pytest.mark.parametrize("case_id", ["timm-test_resnet", "timm-test_efficientnet", "hf-resnet"])
def test_scorecam_matches_torchcam(case_id):
    torchcam_methods = peer("torchcam.methods")

    case = CASES[case_id]()
    x = images(case.size, batch=2)
    targets = strongest_targets(case, x, "gradcam")  # (Score-CAM's own would cost 3 Score-CAMs; ours() checks)
    theirs = torchcam_maps(case, x, torchcam_methods.ScoreCAM, targets, batch_size=32)
    assert max_diff(ours(case, x, "scorecam", targets), theirs) <= TOL


@pytest.mark.parametrize("case_id", CASES)
def test_eigencam_matches_pytorch_grad_cam_up_to_its_sign(case_id):
    case = CASES[case_id]()
    x = images(case.size)
    out = CAM(case.model, case.target, "eigencam")(x)
    peer_raw, _ = pgc_maps(case, x, peer("pytorch_grad_cam").EigenCAM, out.logits.argmax(dim=1))
    peer_raw = torch.from_numpy(peer_raw)
    sign = torch.sign((out.raw * peer_raw).flatten(1).sum(dim=1))[:, None, None]
    assert max_diff(out.raw, sign * peer_raw) <= TOL * out.raw.abs().max()
    scale_cam_image = peer("pytorch_grad_cam.utils.image").scale_cam_image
    assert max_diff(out.maps, torch.from_numpy(scale_cam_image(np.maximum((sign * peer_raw).numpy(), 0)))) <= TOL
    # the sign convention: the map correlates non-negatively with the channel sum of the activations
    activations, _ = captured(case, x, None)
    total = activations.sum(dim=1).flatten(1)
    assert ((out.raw.flatten(1) * (total - total.mean(dim=1, keepdim=True))).sum(dim=1) >= 0).all()


def test_eigencam_is_class_agnostic():
    case = CASES["timm-test_resnet"]()
    x = images(case.size)
    cam = CAM(case.model, None, "eigencam")
    assert torch.equal(cam(x, torch.zeros(3, dtype=torch.long)).maps, cam(x, torch.full((3,), 2)).maps)


# ---------------------------------------------------------------------------------------------
# One forward for many methods; the registry; errors
# ---------------------------------------------------------------------------------------------
def captured(case: Case, x: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The target module's output and (for ``targets``) its gradient, read with a plain hook."""
    store = {}
    module = case.peer_model.get_submodule(case.module)
    handle = module.register_forward_hook(lambda m, i, out: store.__setitem__("A", out))
    try:
        logits = case.peer_model(x)
    finally:
        handle.remove()
    if targets is None:
        return store["A"].detach(), None
    (gradients,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), store["A"])
    return store["A"].detach(), gradients


def normalize(cam: torch.Tensor) -> torch.Tensor:
    low, high = cam.amin(dim=(-2, -1), keepdim=True), cam.amax(dim=(-2, -1), keepdim=True)
    return ((cam - low) / (high - low + 1e-8)).float()


def test_maps_of_many_methods_share_one_forward_and_equal_single_calls():
    case = CASES["timm-test_resnet-layer3"]()
    x = images(case.size)
    forwards = []
    handle = case.model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        everything = CAM(case.model, case.target).maps(x, methods=[m for m in cam_methods() if m != "scorecam"])
    finally:
        handle.remove()
    assert len(forwards) == 1  # one forward for seven methods (Score-CAM adds masked forwards of its own)
    for method, out in everything.items():
        single = CAM(case.model, case.target, method)(x)
        assert torch.equal(out.maps, single.maps), method
        assert torch.equal(out.logits, everything["gradcam"].logits)


@pytest.mark.parametrize("per_sample", ["exact", "held_stats"])
def test_every_gradient_method_weighs_each_sample_by_its_own_gradient_in_train_mode(per_sample):
    """At stage -2 of a train-mode ResNet, BatchNorm after the target couples the samples: each
    gradient method's maps equal its formula on the per-sample loop's gradients (``exact``: the full
    derivative; ``held_stats``: the batch statistics after the target held, test_cam's definition)."""
    model = train_mode_model("test_resnet")
    x, targets = images(64, batch=6, seed=1), torch.tensor([0, 1, 2, 3, 0, 1])
    cam = CAM(model, -2, per_sample=per_sample)
    got = cam.maps(x, targets, methods=GRADIENT_METHODS)
    assert cam.per_sample_path == per_sample
    with held_batch_norms(model, model.layer3, x) if per_sample == "held_stats" else nullcontext():
        activations, gradients = per_sample_loop_gradients(model, model.layer3, x, targets, create_graph=False)
    inputs = CAMInputs(activations.detach(), gradients, x, targets, model)
    for method in GRADIENT_METHODS:
        expected = normalize(get_cam_method(method).compute(inputs).relu())
        assert expected.flatten(1).amax(dim=1).gt(0).sum() >= 4, f"{method}: too many all-zero maps to compare"
        assert (got[method].maps - expected).abs().max() <= TOL, method


def test_gradcam_is_the_gradcam_method_and_exported():
    case = CASES["timm-test_resnet-layer3"]()
    x = images(case.size)
    assert torch.equal(GradCAM(case.model, "layer3")(x).maps, CAM(case.model, "layer3")(x).maps)
    assert hf_gazecons.CAM is CAM and hf_gazecons.cam_methods() == cam_methods()
    assert GRADIENT_METHODS == ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcam_elementwise")
    assert cam_methods(differentiable=False) == ("scorecam", "eigencam")
    assert all(get_cam_method(m).reference for m in cam_methods())


@pytest.mark.parametrize("method", ["scorecam", "eigencam"])
def test_scoring_only_methods_refuse_training(method):
    with pytest.raises(UsageError, match=f"{method} .* is scoring only"):
        CAM(timm_net("test_resnet"), method=method, differentiable=True)
    with pytest.raises(UsageError, match="scoring only"):
        CAM(timm_net("test_resnet"), differentiable=True).maps(images(64), methods=["gradcam", method])


def test_unknown_method_lists_the_names():
    with pytest.raises(UsageError, match=r"unknown CAM method 'gradcam\+'.*gradcampp.*eigencam"):
        CAM(timm_net("test_resnet"), method="gradcam+")


def test_a_registered_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register("gradcam", "x", "y")(lambda inputs: inputs.activations.sum(dim=1))


def test_scorecam_batches_masked_inputs_in_bounded_chunks_and_forwards_zero_masks_once(monkeypatch):
    """At most ``batch_size`` inputs per forward, across images; constant channels share one forward."""
    from hf_gazecons import score_cam

    case = CASES["timm-test_resnet"]()
    x = images(case.size, batch=2)
    activations, _ = captured(case, x, None)
    constant = int((activations.flatten(2).amax(dim=2) == activations.flatten(2).amin(dim=2)).sum())
    sizes = []

    def recording(model, pixel_values):
        def forward(inputs):
            sizes.append(len(inputs))
            return model(inputs)

        return forward, torch.contiguous_format

    monkeypatch.setattr(score_cam, "inference_forward", recording)
    weights = score_cam.score_cam_weights(case.model, x, activations, torch.tensor([0, 1]), batch_size=7)
    assert constant > 0 and max(sizes) <= 7
    assert sum(sizes) == 2 * activations.shape[1] - constant + 1  # + the all-zero image, once
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize(
    "case_id,folded", [("timm-test_resnet", True), ("timm-test_efficientnet", False), ("hf-resnet", False)]
)
def test_scorecam_inference_view_is_used_where_it_reproduces_the_model(case_id, folded):
    """A timm ResNet gets the folded, channels-last view; a model where nothing folds (timm's
    EfficientNet: BatchNormAct2d) or that cannot be traced (transformers) runs itself."""
    from hf_gazecons.score_cam import inference_forward

    case = CASES[case_id]()
    x = images(case.size, batch=2)
    forward, memory_format = inference_forward(case.model, x)
    assert (forward.__name__ == "fast") == folded
    assert memory_format == (torch.channels_last if folded else torch.contiguous_format)
    with torch.no_grad():
        expected = case.peer_model(x)
        torch.testing.assert_close(forward(x), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert not case.model.training


def test_folded_view_leaves_the_model_as_it_was_and_shares_its_other_modules():
    from hf_gazecons.score_cam import folded_view

    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model("test_resnet", num_classes=3)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [(n, type(m), m.training) for n, m in model.named_modules()]
    view = folded_view(model)
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())  # statistics too
    assert [(n, type(m), m.training) for n, m in model.named_modules()] == modules
    assert all(p.is_contiguous() for p in model.parameters())
    convs = [m for m in view.modules() if isinstance(m, nn.Conv2d)]
    folded = [m for m in convs if m.weight.is_contiguous(memory_format=torch.channels_last)]
    assert len(folded) == sum(isinstance(m, nn.Conv2d) for m in model.modules())  # every conv has its BatchNorm
    assert not any(isinstance(m, nn.BatchNorm2d) for m in view.modules())
    assert view.get_submodule("fc") is model.fc  # shared, not copied
    x = images(96, batch=2)
    with torch.no_grad(), eval_mode(model):
        torch.testing.assert_close(view(x), model(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Training: each differentiable method's penalty gradient against finite differences
# ---------------------------------------------------------------------------------------------
def smooth_double_model() -> nn.Module:
    """test_resnet with SiLU (no kinks before the target) in float64."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3, zero_init_last=False, act_layer="silu")
    return randomize_batchnorm(model).double()


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_penalty_gradient_matches_finite_differences(method):
    """d/dt of the penalty (paper deviation from a fixed class map) at parameters p + t v, by
    autograd through the differentiable map (second order: the gradients in the weights are
    differentiated too, so this is the penalty's exact derivative) and by central differences."""
    model = smooth_double_model()
    x = images(64, batch=4, seed=3).double()
    cam = CAM(model, "layer3", method, differentiable=True, second_order=True)
    targets = cam(x).logits.detach().argmax(dim=1)
    class_map = cam(x, targets).maps.detach().mean(dim=0)
    params = [p for p in model.parameters() if p.requires_grad]
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype)
                 for i, p in enumerate(params)]  # fmt: skip

    def penalty() -> torch.Tensor:
        return per_sample_deviation(cam(x, targets).maps, class_map, "paper").mean()

    value = penalty()
    assert value > 0
    grads = torch.autograd.grad(value, params, allow_unused=True)
    analytic = sum(float((g * v).sum()) for g, v in zip(grads, direction) if g is not None)
    step = 1e-8  # XGrad-CAM divides by sum_ij A_k, which is small for some channels: its curvature needs a small step
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            for p, v in zip(params, direction):
                p.add_(sign * step * v)
            values.append(float(penalty()))
            for p, v in zip(params, direction):
                p.sub_(sign * step * v)
    numeric = (values[0] - values[1]) / (2 * step)
    assert abs(analytic) > 1e-8
    assert analytic == pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("method", ["layercam", "gradcampp"])
def test_first_order_treats_gradients_as_constants(method):
    """Without second order the map's gradient is the one with G held fixed (autograd through the
    method's formula on a detached G)."""
    model = smooth_double_model()
    x = images(64, batch=3, seed=4).double()
    targets = torch.tensor([0, 1, 2])
    CAM(model, "layer3", method, differentiable=True)(x, targets).maps.sum().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    store = {}
    handle = model.layer3.register_forward_hook(lambda m, i, out: store.__setitem__("A", out))
    logits = model(x)
    handle.remove()
    (g,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), store["A"], retain_graph=True)
    inputs = CAMInputs(store["A"], g.detach(), x, targets, model)
    raw = get_cam_method(method).compute(inputs)
    low, high = raw.relu().amin(dim=(1, 2), keepdim=True), raw.relu().amax(dim=(1, 2), keepdim=True)
    ((raw.relu() - low) / (high - low + 1e-8)).sum().backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys() and "fc.weight" not in got  # nothing after the target
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-12)
