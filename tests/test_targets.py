"""Target resolution and activation layouts (hf_gazecons.targets)."""

from __future__ import annotations

import pytest
import timm
import torch
from tiny import TINY_TRANSFORMERS
from torch import nn

from hf_gazecons.errors import TargetLayerError
from hf_gazecons.targets import TargetLayer, resolve_target, to_spatial_map, unwrap_model


def target(layout=None, prefix=None, name="layer") -> TargetLayer:
    return TargetLayer(name, nn.Identity(), None, layout, prefix)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def tokens_to_nchw(tokens: torch.Tensor, prefix: int, h: int, w: int) -> torch.Tensor:
    """The obvious conversion: drop the prefix tokens, row-major patch grid, channels first."""
    b, _, c = tokens.shape
    return tokens[:, prefix:].reshape(b, h, w, c).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# to_spatial_map with a known layout
# ---------------------------------------------------------------------------------------------
def test_nchw_is_unchanged():
    x = randn(2, 8, 4, 5)
    assert torch.equal(to_spatial_map(x, target("NCHW"), (64, 80)), x)


def test_nhwc_is_permuted():
    x = randn(2, 4, 5, 8)
    assert torch.equal(to_spatial_map(x, target("NHWC"), (64, 80)), x.permute(0, 3, 1, 2))


@pytest.mark.parametrize("prefix", [0, 1, 2, 5])
def test_tokens_with_known_prefix(prefix):
    x = randn(2, prefix + 16, 8)
    out = to_spatial_map(x, target("NLC", prefix), (64, 64))
    assert torch.equal(out, tokens_to_nchw(x, prefix, 4, 4))


def test_tokens_of_a_non_square_input():
    x = randn(2, 1 + 4 * 6, 8)  # 64x96 input, 16 px patches
    out = to_spatial_map(x, target("NLC", 1), (64, 96))
    assert torch.equal(out, tokens_to_nchw(x, 1, 4, 6))


# ---------------------------------------------------------------------------------------------
# to_spatial_map inferring layout and prefix tokens
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prefix,grid,input_size",
    [
        (0, (4, 4), (64, 64)),  # Swin-style average of all tokens
        (1, (4, 4), (64, 64)),  # class token
        (2, (4, 4), (64, 64)),  # class + distillation token (DeiT)
        (1, (14, 14), (224, 224)),
        (2, (14, 14), (224, 224)),
        (5, (14, 14), (224, 224)),  # class + 4 register tokens
        (1, (4, 6), (64, 96)),
        (0, (6, 4), (96, 64)),
        (2, (2, 2), (32, 32)),  # DeiT at 32 px: not a 2x3 grid without prefix tokens
        (5, (5, 5), (80, 80)),  # class + 4 registers: not a 5x6 grid without prefix tokens
    ],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"prefix{v}",
)
def test_tokens_infer_prefix_and_grid(prefix, grid, input_size):
    x = randn(2, prefix + grid[0] * grid[1], 8)
    out = to_spatial_map(x, target(), input_size)
    assert out.shape == (2, 8, *grid)
    assert torch.equal(out, tokens_to_nchw(x, prefix, *grid))


@pytest.mark.parametrize(
    "shape,input_size,layout",
    [
        ((2, 16, 4, 4), (64, 64), "NCHW"),
        ((2, 4, 4, 16), (64, 64), "NHWC"),
        ((2, 3, 3, 64), (96, 96), "NHWC"),  # MambaOut at 96 px
        ((2, 512, 7, 7), (224, 224), "NCHW"),
        ((2, 7, 7, 768), (224, 224), "NHWC"),  # timm Swin
        ((2, 32, 4, 6), (64, 96), "NCHW"),
        ((2, 4, 6, 32), (64, 96), "NHWC"),
        ((2, 3, 32, 32), (32, 32), "NCHW"),  # 3 channels at full resolution (an input-like map)
    ],
)
def test_four_d_layout_inferred(shape, input_size, layout):
    x = randn(*shape)
    expected = x if layout == "NCHW" else x.permute(0, 3, 1, 2)
    assert torch.equal(to_spatial_map(x, target(), input_size), expected)


@pytest.mark.parametrize(
    "shape,layout,reported",
    [
        ((2, 3), None, "(2, 3)"),  # a classifier output
        ((2, 3), "NCHW", "(2, 3)"),
        ((2, 512, 1, 1), None, "(2, 512, 1, 1)"),  # a pooled map
        ((2, 512, 1, 1), "NCHW", "(2, 512, 1, 1)"),
        ((2, 1, 1, 64), "NHWC", "(2, 64, 1, 1)"),  # reported channels first
        ((2, 1, 64), "NLC", "1 tokens"),  # a single token
        ((2, 2, 3, 4, 5), None, "(2, 2, 3, 4, 5)"),
        ((2, 8, 4, 4), "NLC", "(2, 8, 4, 4)"),  # 4-D where tokens are expected
    ],
)
def test_no_spatial_map_error_names_layer_and_shape(shape, layout, reported):
    with pytest.raises(TargetLayerError) as info:
        to_spatial_map(randn(*shape), target(layout, name="head.fc"), (64, 64))
    message = str(info.value)
    assert "'head.fc'" in message and reported in message


def test_tokens_that_form_no_grid():
    with pytest.raises(TargetLayerError, match=r"'layer'.*17 tokens"):
        to_spatial_map(randn(2, 17, 8), target("NLC", 0), (64, 64))


# ---------------------------------------------------------------------------------------------
# resolve_target
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet18():
    return timm.create_model("resnet18", pretrained=False, num_classes=3)


def test_timm_default_is_forward_features(resnet18):
    resolved = resolve_target(resnet18)
    assert (resolved.name, resolved.owner, resolved.method) == ("forward_features", resnet18, "forward_features")
    assert resolve_target(resnet18, "forward_features") == resolved


@pytest.mark.parametrize("index,name", [(-1, "layer4"), (-2, "layer3"), (0, "act1"), (4, "layer4")])
def test_timm_stage_index(resnet18, index, name):
    resolved = resolve_target(resnet18, index)
    assert resolved.name == name and resolved.owner is resnet18.get_submodule(name) and resolved.method is None


def test_timm_named_module(resnet18):
    resolved = resolve_target(resnet18, "layer2.1.conv2")
    assert resolved.owner is resnet18.layer2[1].conv2 and resolved.method is None


def test_timm_vit_default_and_channels_last_hint():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=64)
    resolved = resolve_target(vit)
    assert (resolved.name, resolved.layout, resolved.num_prefix_tokens) == ("blocks.11.norm1", "NLC", 1)
    assert resolved.owner is vit.blocks[11].norm1
    vit_avg = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=64, global_pool="avg")
    assert resolve_target(vit_avg).name == "forward_features"
    assert resolve_target(vit_avg).num_prefix_tokens == 1
    mambaout = timm.create_model("test_mambaout", pretrained=False, num_classes=3)
    assert resolve_target(mambaout).layout == "NHWC"
    assert resolve_target(mambaout, -1).layout == "NHWC"


@pytest.mark.parametrize(
    "family,name,layout",
    [
        ("resnet", "resnet.encoder.stages.1", "NCHW"),
        ("vit", "vit.layers.1.layernorm_before", "NLC"),
        ("swin", "swin.layernorm", "NLC"),
    ],
)
def test_transformers_defaults(family, name, layout):
    cls, config = TINY_TRANSFORMERS[family]()
    model = cls(config)
    resolved = resolve_target(model)
    assert (resolved.name, resolved.layout) == (name, layout)
    assert resolved.owner is model.get_submodule(name)
    assert resolve_target(model, name).owner is resolved.owner  # by name as well


def test_unknown_name_and_stage_errors(resnet18):
    with pytest.raises(TargetLayerError, match="no module named 'layer3.conv1'.*layer3.0.conv1"):
        resolve_target(resnet18, "layer3.conv1")
    with pytest.raises(TargetLayerError, match=r"out of range.*layer4"):
        resolve_target(resnet18, 5)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(TargetLayerError, match="'0'"):  # suggests the last convolution
        resolve_target(plain)
    with pytest.raises(TargetLayerError, match="feature_info"):
        resolve_target(plain, -1)
    assert resolve_target(plain, "0").owner is plain[0]


def test_wrappers_are_unwrapped(resnet18):
    assert unwrap_model(nn.DataParallel(resnet18)) is resnet18
    assert unwrap_model(torch.compile(resnet18)) is resnet18  # not run: compiling is not needed here
    assert resolve_target(nn.DataParallel(resnet18), "layer3").owner is resnet18.layer3
