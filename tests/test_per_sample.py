"""Coupling after the target, found by what the layers do (hf_gazecons.per_sample), and the path each
case takes: every map equals a per-sample loop (tests/test_cam.py's references), whatever the layer.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from test_cam import assert_grads_equal, held_loop_maps, images, max_diff, param_grads, per_sample_loop_maps
from torch import nn

from hf_gazecons import per_sample
from hf_gazecons.cam import GradCAM
from hf_gazecons.errors import TargetLayerError, UsageError

TOL = 1e-5


class BatchStandardise(nn.Module):
    """A hand-written normalisation over the batch (no torch batch norm): every channel minus its batch
    mean, over its batch standard deviation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        return (x - mean) / (x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + 1e-5).sqrt()


class Small(nn.Module):
    """stem (the target) -> conv -> ``norm`` -> [``extra``] -> SiLU -> mean pool -> linear."""

    def __init__(self, norm: nn.Module, extra: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), norm, extra or nn.Identity(), nn.SiLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean(dim=(2, 3)))


def small(norm: nn.Module, extra: nn.Module | None = None, train: bool = True) -> Small:
    torch.manual_seed(0)
    model = Small(norm, extra)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            nn.init.normal_(module.weight, 1.0, 0.5)  # maps that are not all zero
            nn.init.normal_(module.bias, 0.0, 0.2)
    return model.train(train)


NORMS = {  # name -> (model, coupled?, can its statistics be held?)
    "BatchNorm2d": (lambda: small(nn.BatchNorm2d(8)), True, True),
    "EvoNorm2dB0": (lambda: small(timm.layers.EvoNorm2dB0(8)), True, False),
    "hand-written": (lambda: small(BatchStandardise()), True, False),
    "BatchNorm2d+hand-written": (lambda: small(nn.BatchNorm2d(8), BatchStandardise()), True, True),
    "GroupNorm": (lambda: small(nn.GroupNorm(2, 8)), False, False),
    "LayerNorm2d": (lambda: small(timm.layers.LayerNorm2d(8)), False, False),
    "BatchNorm2d-eval": (lambda: small(nn.BatchNorm2d(8), train=False), False, False),
}


def expected_path(mode: str, coupled: bool, holdable: bool, name: str) -> str:
    if not coupled:
        return "independent"
    if mode == "exact":
        return "exact"
    if not holdable:
        return "exact"
    return "held_stats+exact" if "+" in name else "held_stats"


def run_cam(model: nn.Module, mode: str, x, targets, second_order: bool = False):
    """The maps and the parameter gradients of a weighted sum of them, with any warning recorded."""
    cam = GradCAM(model, "stem", differentiable=True, second_order=second_order, per_sample=mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = cam(x, targets)
    weights = torch.rand(out.maps.shape, generator=torch.Generator().manual_seed(3))
    (out.maps * weights).sum().backward()
    return cam, out.maps.detach(), param_grads(model), weights, caught


def reference(model, mode: str, holdable: bool, x, targets, second_order: bool = False) -> torch.Tensor:
    if mode == "held_stats" and holdable:
        return held_loop_maps(model, model.stem, x, targets, create_graph=second_order)
    return per_sample_loop_maps(model, model.stem, x, targets, create_graph=second_order)


@pytest.mark.parametrize("mode", ["exact", "held_stats"])
@pytest.mark.parametrize("name", list(NORMS))
def test_each_layer_takes_its_path_and_gives_the_per_sample_loop_maps(name, mode):
    build, coupled, holdable = NORMS[name]
    model = build()
    x, targets = images(16, batch=5, seed=1), torch.tensor([0, 1, 2, 3, 0])
    cam, maps, grads, weights, caught = run_cam(model, mode, x, targets)
    assert cam.per_sample_path == expected_path(mode, coupled, holdable, name)
    messages = [str(w.message) for w in caught]
    if mode == "held_stats" and cam.per_sample_path in ("exact", "held_stats+exact"):  # B x the cost: said so
        assert len(messages) == 1 and "mixes the samples of a batch" in messages[0]
    else:
        assert messages == []

    expected = reference(model, mode, holdable, x, targets)
    assert expected.flatten(1).amax(dim=1).gt(0).sum() >= 4, "too many all-zero maps to compare"
    assert max_diff(maps, expected.detach()) <= TOL
    (expected * weights).sum().backward()
    assert_grads_equal(grads, param_grads(model))


@pytest.mark.parametrize("name", ["EvoNorm2dB0", "hand-written", "BatchNorm2d+hand-written"])
def test_coupled_layers_matter(name):
    """Where the probe says "coupled", the one-backward shortcut would be wrong: not a vacuous path choice."""
    model = NORMS[name][0]()
    x, targets = images(16, batch=5, seed=1), torch.tensor([0, 1, 2, 3, 0])
    captured = {}
    handle = model.stem.register_forward_hook(lambda m, a, out: captured.setdefault("A", out))
    logits = model(x)
    handle.remove()
    (summed,) = torch.autograd.grad(logits[torch.arange(5), targets].sum(), captured["A"])
    shortcut = F.relu((summed.mean(dim=(2, 3), keepdim=True) * captured["A"]).sum(dim=1))
    exact = per_sample_loop_maps(model, model.stem, x, targets, create_graph=False)
    assert max_diff(GradCAM(model, "stem", per_sample="exact")(x, targets).maps, exact.detach()) <= TOL
    low, high = shortcut.amin(dim=(1, 2), keepdim=True), shortcut.amax(dim=(1, 2), keepdim=True)
    assert max_diff(((shortcut - low) / (high - low + 1e-8)).detach(), exact.detach()) > 1e-3


@pytest.mark.parametrize("mode", ["exact", "held_stats"])
def test_second_order_through_a_held_and_an_exact_coupling(mode):
    model = NORMS["BatchNorm2d+hand-written"][0]()
    x, targets = images(16, batch=5, seed=1), torch.tensor([0, 1, 2, 3, 0])
    cam, maps, grads, weights, _ = run_cam(model, mode, x, targets, second_order=True)
    assert cam.per_sample_path == ("held_stats+exact" if mode == "held_stats" else "exact")
    expected = reference(model, mode, True, x, targets, second_order=True)
    assert max_diff(maps, expected.detach()) <= TOL
    (expected * weights).sum().backward()
    expected_grads = param_grads(model)
    assert expected_grads["head.weight"].abs().sum() > 0  # second order reaches the layers after the target
    assert_grads_equal(grads, expected_grads)


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["exact", "held_stats"])
def test_sync_batch_norm_in_a_one_process_gloo_group(one_process_group, mode):
    """On a CPU, SyncBatchNorm normalises with batch statistics in eval mode when it keeps no running
    statistics (torch refuses its train mode on a CPU once a process group exists)."""
    model = small(nn.SyncBatchNorm(8, track_running_stats=False), train=False)
    x, targets = images(16, batch=5, seed=1), torch.tensor([0, 1, 2, 3, 0])
    cam, maps, *_ = run_cam(model, mode, x, targets)
    assert cam.per_sample_path == mode
    assert max_diff(maps, reference(model, mode, True, x, targets).detach()) <= TOL


def test_sync_batch_norm_across_processes_is_refused_cleanly(one_process_group, monkeypatch):
    model = small(nn.SyncBatchNorm(8))
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    with pytest.raises(TargetLayerError, match="SyncBatchNorm after the Grad-CAM target 'stem'"):
        GradCAM(model, "stem", differentiable=True)(images(16, batch=3))
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == hooks
    assert not torch._C._is_torch_function_mode_enabled()


def count_probes(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = per_sample.couples_samples

    def counted(logits, activations):
        calls.append(logits.shape[0])
        return original(logits, activations)

    monkeypatch.setattr(per_sample, "couples_samples", counted)
    return calls


def test_the_probe_runs_once_per_model_target_mode_and_train_state(monkeypatch):
    calls = count_probes(monkeypatch)
    model = small(nn.BatchNorm2d(8))
    x = images(16, batch=4)
    for _ in range(3):
        GradCAM(model, "stem", differentiable=True)(x)  # a new GradCAM each time: the answer is the model's
    assert len(calls) == 1
    cam = GradCAM(model, "stem", per_sample="exact")
    cam(x), cam(x)
    assert len(calls) == 2 and cam.per_sample_path == "exact"
    model.eval()
    cam(x), cam(x)
    assert len(calls) == 3 and cam.per_sample_path == "independent"
    model.train()
    cam(x)
    assert len(calls) == 3 and cam.per_sample_path == "exact"
    GradCAM(copy.deepcopy(model), "stem")(x)  # another model
    assert len(calls) == 4


def test_a_batch_of_one_is_not_probed_and_not_remembered(monkeypatch):
    calls = count_probes(monkeypatch)
    model = small(nn.BatchNorm2d(8))
    cam = GradCAM(model, "stem", per_sample="exact")
    cam(images(16, batch=1))
    assert calls == [] and cam.per_sample_path == "independent"  # one sample: its own derivative
    cam(images(16, batch=3))
    assert calls == [3] and cam.per_sample_path == "exact"


def test_the_call_has_no_side_effect_beyond_one_forward():
    """BatchNorm and EvoNorm running statistics are updated once, as by one plain forward, and the
    random state advances as by that forward (dropout): the probe adds no forward and draws nothing."""
    model = small(nn.BatchNorm2d(8), nn.Sequential(timm.layers.EvoNorm2dB0(8), nn.Dropout(0.5)))
    plain = copy.deepcopy(model)
    x = images(16, batch=4)
    torch.manual_seed(5)
    plain(x)
    expected_state = torch.get_rng_state()
    for mode in ("held_stats", "exact"):
        model_copy = copy.deepcopy(model)
        torch.manual_seed(5)
        cam = GradCAM(model_copy, "stem", differentiable=True, per_sample=mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cam(x)
        assert cam.per_sample_path in ("exact", "held_stats+exact")
        assert torch.equal(torch.get_rng_state(), expected_state)
        for (name, got), expected in zip(model_copy.state_dict().items(), plain.state_dict().values()):
            assert torch.equal(got, expected), name
    assert not torch._C._is_torch_function_mode_enabled()


def test_held_statistics_leave_the_forward_and_the_loss_gradient_exact():
    """Only dy_i/dA_i changes: the logits and the gradient of a loss of the logits are train mode's own."""
    model = small(nn.BatchNorm2d(8))
    plain = copy.deepcopy(model)
    x, labels = images(16, batch=4), torch.tensor([0, 1, 2, 3])
    out = GradCAM(model, "stem", differentiable=True)(x, labels)
    F.cross_entropy(out.logits, labels).backward()
    logits = plain(x)
    F.cross_entropy(logits, labels).backward()
    torch.testing.assert_close(out.logits.detach(), logits.detach())
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_unknown_mode_is_refused():
    with pytest.raises(UsageError, match="per_sample must be one of held_stats, exact"):
        GradCAM(small(nn.BatchNorm2d(8)), "stem", per_sample="loop")


def test_a_compiled_model_is_probed_without_side_effects_and_refused_where_coupled():
    """One backward per compiled graph: the probe runs the eager module on two samples and restores its
    buffers and the random state; batched products cannot run through a compiled graph."""
    model = small(nn.BatchNorm2d(8))
    compiled = torch.compile(model)
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(7)
    state = torch.get_rng_state()
    with pytest.raises(TargetLayerError, match="cannot be taken through a compiled graph"):
        GradCAM(compiled, "stem")(images(16, batch=4))
    assert torch.equal(torch.get_rng_state(), state)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # (tests/test_precision.py scores compiled eval models)
