"""Score-CAM's channel weights: masked forward passes, batched across channels and images.

For sample ``b`` and channel ``k`` of the target activations ``A``, the channel min-max normalised
to [0, 1] over its positions (eps 1e-8) and upsampled bilinearly to the input (align_corners=False)
masks the input: ``x_bk = U(norm(A_bk)) * x_b``. The channel's weight is the softmax over ``k`` of
the target class's logit on ``x_bk`` (Wang et al., Score-CAM, CVPR Workshops 2020; torchcam
0.5.0's conventions). The ``(b, k)`` pairs are flattened into one list and forwarded in chunks of
``batch_size`` masked inputs, so memory is that of one forward of ``batch_size`` images whatever
the number of channels or images (plus the folded convolutions' weights, below). These make it
cheaper than torchcam's loop, with the same weights:

* a channel that is constant over its positions normalises to zero everywhere, so its masked input
  is the all-zero image for every sample: it is forwarded once;
* the forwards run on an inference view of the model (eval mode, each Conv/BatchNorm pair folded
  into one new channels-last convolution with ``torch.fx``; every other module is the model's own),
  used only after it gave the model's logits on a few unmasked images; where tracing fails, or
  under autocast, the model itself runs in eval mode;
* the masked inputs are written into one reused buffer, each run of a sample's channels from its
  image by broadcasting (no gathered copy of the images);
* torchcam's extra forward of the unmasked batch, whose logit it subtracts before the softmax, is
  left out: a shift by a per-sample constant leaves a softmax unchanged.

    >>> weights = score_cam_weights(model, pixel_values, activations, targets, batch_size=32)  # (B, C)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .batching import eval_mode
from .cam import model_logits
from .targets import unwrap_model

__all__ = ["MASK_EPS", "channel_masks", "folded_view", "inference_forward", "score_cam_weights"]

MASK_EPS = 1e-8
"""Added to each channel's range in its min-max normalisation (torchcam's value)."""

_CHECK_IMAGES = 2  # unmasked images on which an inference copy must reproduce the model's logits
_CHECK_TOLERANCE = 1e-3  # relative to the largest |logit|: folding changes rounding, not results


def channel_masks(activations: torch.Tensor) -> torch.Tensor:
    """Each (B, C) channel of (B, C, H', W') activations min-max normalised over its positions."""
    shifted = activations - activations.amin(dim=(2, 3), keepdim=True)
    return shifted / (shifted.amax(dim=(2, 3), keepdim=True) + MASK_EPS)


@torch.no_grad()
def score_cam_weights(
    model: nn.Module, pixel_values: torch.Tensor, activations: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """(B, C) Score-CAM channel weights of (B, C, H', W') ``activations`` of ``pixel_values`` for
    the (B,) ``targets``, from masked forwards of at most ``batch_size`` inputs each."""
    masks = channel_masks(activations.detach().float())
    constant = masks.flatten(2).amax(dim=2) == 0  # (B, C): masked input all zero
    forward, memory_format = inference_forward(model, pixel_values)
    scores = masks.new_zeros(constant.shape)
    if constant.any():
        zero_logits = forward(torch.zeros_like(pixel_values[:1])).float()[0]
        scores = torch.where(constant, zero_logits[targets][:, None], scores)
    pairs = (~constant).nonzero()
    shape = (min(batch_size, len(pairs)), *pixel_values.shape[1:])
    buffer = torch.empty(shape, dtype=pixel_values.dtype, device=pixel_values.device, memory_format=memory_format)
    for chunk in pairs.split(batch_size):
        samples, channels = chunk.unbind(dim=1)
        upsampled = F.interpolate(
            masks[samples, channels][:, None], size=shape[-2:], mode="bilinear", align_corners=False
        ).to(pixel_values.dtype)
        inputs = buffer[: len(chunk)]
        start = 0
        for sample, count in zip(*torch.unique_consecutive(samples, return_counts=True)):
            stop = start + int(count)  # a run of one sample's channels: its image, broadcast, no gathered copy
            torch.mul(upsampled[start:stop], pixel_values[sample], out=inputs[start:stop])
            start = stop
        scores[samples, channels] = forward(inputs).float().gather(1, targets[samples, None])[:, 0]
    return scores.softmax(dim=1)


def inference_forward(
    model: nn.Module, pixel_values: torch.Tensor
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.memory_format]:
    """A function from inputs to ``model``'s eval-mode logits, and the memory format its inputs
    should have: an inference view of the model (its Conv/BatchNorm pairs folded into new
    channels-last convolutions, :func:`folded_view`) when it reproduces the model's logits on the
    first images of ``pixel_values``, else the model itself (see the module docstring)."""
    base = unwrap_model(model)

    def reference(inputs: torch.Tensor) -> torch.Tensor:
        with eval_mode(base):
            return model_logits(base, inputs)

    if pixel_values.ndim != 4 or torch.is_autocast_enabled(pixel_values.device.type):
        return reference, torch.contiguous_format
    folded = folded_view(base)
    if folded is None:
        return reference, torch.contiguous_format

    def fast(inputs: torch.Tensor) -> torch.Tensor:
        with eval_mode(base):  # the view's other modules are the model's own
            return model_logits(folded, inputs.contiguous(memory_format=torch.channels_last))

    probe = pixel_values[:_CHECK_IMAGES]
    with torch.no_grad():
        expected, got = reference(probe).float(), fast(probe).float()
    scale = float(expected.abs().max()) or 1.0
    if float((got - expected).abs().max()) > _CHECK_TOLERANCE * scale:
        return reference, torch.contiguous_format
    return fast, torch.channels_last


def folded_view(model: nn.Module) -> nn.Module | None:
    """``model`` traced with ``torch.fx``, each ``Conv2d`` followed only by a ``BatchNorm2d`` (exactly
    that class, with running statistics) replaced by one new channels-last convolution with the
    BatchNorm folded in (``torch.nn.utils.fusion.fuse_conv_bn_eval``, eval-mode statistics). Its
    other modules ARE the model's (not copies): only the folded convolutions take new memory, and
    the model itself is not changed. None where ``torch.fx`` cannot trace it (transformers models,
    data-dependent control flow) or nothing folds (e.g. timm's ``BatchNormAct2d``, which applies its
    activation too, is left alone)."""
    from torch import fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        traced = fx.symbolic_trace(model)  # new containers around the model's own leaf modules
    except Exception:  # noqa: BLE001 - torch.fx raises many kinds on an untraceable model; the model itself is used
        return None
    modules = dict(traced.named_modules())
    folds = 0
    with eval_mode(model):
        for node in list(traced.graph.nodes):
            norm = modules.get(node.target) if node.op == "call_module" else None
            source = node.args[0] if node.args else None
            if type(norm) is not nn.BatchNorm2d or norm.running_mean is None or not isinstance(source, fx.Node):
                continue
            conv = modules.get(source.target) if source.op == "call_module" else None
            if type(conv) is not nn.Conv2d or len(source.users) != 1:
                continue
            folded = fuse_conv_bn_eval(conv, norm).to(memory_format=torch.channels_last)
            parent, _, name = source.target.rpartition(".")
            setattr(traced.get_submodule(parent), name, folded)  # a container of the trace, not of the model
            node.replace_all_uses_with(source)
            traced.graph.erase_node(node)
            folds += 1
    if not folds:
        return None
    traced.recompile()
    traced.delete_all_unused_submodules()  # the folded BatchNorms (from the trace's containers only)
    return traced
