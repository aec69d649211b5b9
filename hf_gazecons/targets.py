"""Where to look: resolve the Grad-CAM target layer of a model and the layout of its map.

A target is the activation ``A`` of docs/METHOD.md (1.1)-(1.2). It is read either from a module's output
(a forward hook) or from a timm model's ``forward_features`` method, which returns the map that
the classifier head pools. Maps come in three layouts, all turned into ``(B, C, H', W')``:

* ``NCHW`` — CNN feature maps (timm, transformers ResNet/ConvNext/RegNet);
* ``NHWC`` — channels-last maps (timm Swin, MambaOut);
* ``NLC``  — token sequences (ViT/DeiT/Swin in transformers), prefix tokens dropped and the
  patch tokens reshaped to their grid.

Example::

    >>> model = timm.create_model("resnet18")
    >>> resolve_target(model).name
    'forward_features'
    >>> resolve_target(model, -2).name      # a timm stage index from feature_info
    'layer3'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .errors import TargetLayerError

__all__ = ["TargetLayer", "Layout", "resolve_target", "unwrap_model", "to_spatial_map"]

Layout = Literal["NCHW", "NHWC", "NLC"]

# transformers families whose head averages all tokens of the final norm (no class token)
_TRANSFORMERS_TOKEN_AVERAGE = {"swin", "swinv2", "donut-swin", "maskformer-swin"}
_MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class TargetLayer:
    """A resolved target: what to tap and how to read the tensor it yields.

    ``owner.<method>``'s return value is tapped when ``method`` is set (timm ``forward_features``),
    otherwise ``owner``'s forward output. ``layout``/``num_prefix_tokens`` are ``None`` when they
    are inferred from the tensor and the input size at run time.
    """

    name: str
    owner: nn.Module
    method: str | None = None
    layout: Layout | None = None
    num_prefix_tokens: int | None = None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP/DataParallel/accelerate/torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def is_timm_model(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "forward_features")


def _is_transformers_model(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.") and hasattr(model, "config")


def resolve_target(model: nn.Module, target: str | int | None = None) -> TargetLayer:
    """Resolve ``target`` (``None``, a module name, or a timm stage index) for ``model``.

    ``None`` picks the last map that still carries spatial information into the score: the map
    the head pools for CNNs, the last block's first norm for class-token ViTs (the convention of
    pytorch-grad-cam), the final token norm for Swin in transformers.
    """
    model = unwrap_model(model)
    if _is_transformers_model(model) and hasattr(model, "timm_model"):
        if isinstance(target, str):
            target = target.removeprefix("timm_model.")
        inner = resolve_target(model.timm_model, target)
        return TargetLayer(f"timm_model.{inner.name}", inner.owner, inner.method, inner.layout, inner.num_prefix_tokens)
    if isinstance(target, int):
        return _timm_stage(model, target)
    if isinstance(target, str):
        return _named(model, target)
    if is_timm_model(model):
        return _timm_default(model)
    if _is_transformers_model(model):
        return _transformers_default(model)
    raise TargetLayerError(
        f"cannot choose a target layer automatically for {type(model).__name__}; name one, e.g. "
        f"target={_suggest(model)!r} (a module name from model.named_modules())"
    )


def _timm_hints(model: nn.Module) -> tuple[Layout | None, int | None]:
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        return "NHWC", None
    return None, getattr(model, "num_prefix_tokens", None)


def _timm_default(model: nn.Module) -> TargetLayer:
    blocks = getattr(model, "blocks", None)
    reads_class_token = getattr(model, "global_pool", None) == "token" and getattr(model, "num_prefix_tokens", 0) > 0
    if reads_class_token and isinstance(blocks, nn.Sequential) and hasattr(blocks[-1], "norm1"):
        name = f"blocks.{len(blocks) - 1}.norm1"
        return TargetLayer(name, blocks[-1].norm1, None, "NLC", model.num_prefix_tokens)
    return _forward_features(model)


def _timm_stage(model: nn.Module, index: int) -> TargetLayer:
    feature_info = getattr(model, "feature_info", None)
    if not is_timm_model(model) or not feature_info:
        raise TargetLayerError(
            f"a stage index ({index}) needs a timm model with feature_info; {type(model).__name__} has none: "
            f"name a module instead, e.g. target={_suggest(model)!r}"
        )
    stages = [info["module"] for info in feature_info]
    if not -len(stages) <= index < len(stages):
        raise TargetLayerError(f"stage index {index} is out of range: {type(model).__name__} has stages {stages}")
    target = _named(model, stages[index])
    layout, prefix = _timm_hints(model)
    return TargetLayer(target.name, target.owner, None, layout, prefix)


def _named(model: nn.Module, name: str) -> TargetLayer:
    if name == "forward_features" and hasattr(model, "forward_features"):
        return _forward_features(model)
    modules = dict(model.named_modules())
    if name not in modules:
        close = [n for n in modules if n and (name in n or n.endswith(name.split(".")[-1]))][:8]
        hint = f"; similar names: {close}" if close else f"; e.g. {_suggest(model)!r}"
        raise TargetLayerError(f"{type(model).__name__} has no module named {name!r}{hint}")
    stages = {info["module"] for info in getattr(model, "feature_info", None) or []}
    if is_timm_model(model) and name in stages:  # the model's layout hints hold for its stage outputs only
        layout, prefix = _timm_hints(model)
        return TargetLayer(name, modules[name], None, layout, prefix)
    return TargetLayer(name, modules[name])


def _forward_features(model: nn.Module) -> TargetLayer:
    """The map a timm head pools: the return value of ``model.forward_features``."""
    layout, prefix = _timm_hints(model) if is_timm_model(model) else (None, None)
    return TargetLayer("forward_features", model, "forward_features", layout, prefix)


def _transformers_default(model: nn.Module) -> TargetLayer:
    names = [n for n, _ in model.named_modules()]
    model_type = getattr(model.config, "model_type", "")
    prefix = getattr(model, "base_model_prefix", "")
    if model_type in _TRANSFORMERS_TOKEN_AVERAGE and f"{prefix}.layernorm" in names:
        return _with_layout(_named(model, f"{prefix}.layernorm"), "NLC", 0)
    for pattern, layout in ((r"(^|\.)layers?\.\d+\.layernorm_before$", "NLC"), (r"(^|\.)stages\.\d+$", "NCHW")):
        matches = [n for n in names if re.search(pattern, n)]
        if matches:
            return _with_layout(_named(model, matches[-1]), layout, None)
    raise TargetLayerError(
        f"cannot choose a target layer automatically for {type(model).__name__} ({model_type!r}); "
        f"name one, e.g. target={_suggest(model)!r}"
    )


def _with_layout(target: TargetLayer, layout: Layout, prefix: int | None) -> TargetLayer:
    return TargetLayer(target.name, target.owner, target.method, layout, prefix)


def _suggest(model: nn.Module) -> str:
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else next((n for n, _ in model.named_modules() if n), "<module name>")


def to_spatial_map(tensor: torch.Tensor, target: TargetLayer, input_size: tuple[int, int]) -> torch.Tensor:
    """Return ``tensor`` (the tapped activation or its gradient) as ``(B, C, H', W')``.

    Token sequences lose their ``num_prefix_tokens`` leading tokens (class/distillation/register
    tokens) and are reshaped to the patch grid; channels-last maps are permuted.
    """
    layout = target.layout or _infer_layout(tensor, input_size, target.name)
    if layout == "NLC":
        if tensor.ndim != 3:
            raise _no_spatial_map(target.name, tensor)
        prefix, (h, w) = _token_grid(tensor.shape[1], target.num_prefix_tokens, input_size, target.name)
        tensor = tensor[:, prefix:].reshape(tensor.shape[0], h, w, tensor.shape[2])
        layout = "NHWC"
    if tensor.ndim != 4:
        raise _no_spatial_map(target.name, tensor)
    if layout == "NHWC":
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.shape[-2] * tensor.shape[-1] < 2:
        raise _no_spatial_map(target.name, tensor)
    return tensor


def _infer_layout(tensor: torch.Tensor, input_size: tuple[int, int], name: str) -> Layout:
    """NLC for 3-D tensors; for 4-D ones, the layout whose spatial dims match the input's aspect."""
    if tensor.ndim == 3:
        return "NLC"
    if tensor.ndim != 4:
        raise _no_spatial_map(name, tensor)
    aspect = input_size[0] / input_size[1]
    _, d1, d2, d3 = tensor.shape

    def fits(h: int, w: int) -> bool:
        return abs(math.log(h / w) - math.log(aspect)) < 0.35 and h <= input_size[0] and w <= input_size[1]

    if fits(d2, d3) or not fits(d1, d2):
        return "NCHW"
    return "NHWC"


def _token_grid(length: int, prefix: int | None, input_size: tuple[int, int], name: str) -> tuple[int, tuple[int, int]]:
    """Split a token count into prefix tokens and an (h, w) patch grid of the input's aspect."""
    aspect = input_size[0] / input_size[1]
    prefixes = [prefix] if prefix is not None else range(min(_MAX_PREFIX_TOKENS, length - 1) + 1)
    grids = []
    for p in prefixes:
        n = length - p
        h = max(1, round(math.sqrt(n * aspect)))
        if n > 1 and h * (n // h) == n:
            grids.append((p, (h, n // h)))
    exact = [(p, (h, w)) for p, (h, w) in grids if h * input_size[1] == w * input_size[0]]
    if exact or grids:
        return (exact or grids)[0]
    raise TargetLayerError(
        f"layer {name!r} yields {length} tokens that do not form a patch grid for a "
        f"{input_size[0]}x{input_size[1]} input; choose another target layer"
    )


def _no_spatial_map(name: str, tensor: torch.Tensor) -> TargetLayerError:
    return TargetLayerError(
        f"layer {name!r} yields no spatial map (output shape {tuple(tensor.shape)}); Grad-CAM needs a "
        "(B, C, H, W), (B, H, W, C) or token (B, N, C) activation with more than one position: choose an "
        "earlier layer by name (see model.named_modules()) or a timm stage index such as -1 or -2"
    )
