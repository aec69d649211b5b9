"""Score-CAM's channel weights: masked forward passes, batched across channels and images.

For sample ``b`` and channel ``k`` of the target activations ``A``, the channel min-max normalised
to [0, 1] over its positions (eps 1e-8) and upsampled bilinearly to the input (align_corners=False)
masks the input: ``x_bk = U(norm(A_bk)) * x_b``. The channel's weight is the softmax over ``k`` of
the target class's logit on ``x_bk`` (Wang et al., Score-CAM, CVPR Workshops 2020; torchcam
0.5.0's conventions). The ``(b, k)`` pairs are flattened into one list and forwarded in chunks of
``batch_size`` masked inputs, so memory is that of one forward of ``batch_size`` images whatever
the number of channels or images. Three things make it cheaper than torchcam's loop, with the
same weights:

* a channel that is constant over its positions normalises to zero everywhere, so its masked input
  is the all-zero image for every sample: it is forwarded once;
* the forwards run on an inference copy of the model (eval mode, each Conv/BatchNorm pair folded
  into one convolution with ``torch.fx``, channels-last memory), used only after it gave the
  model's logits on a few unmasked images; where tracing fails, or under autocast, the model itself
  runs in eval mode;
* torchcam's extra forward of the unmasked batch, whose logit it subtracts before the softmax, is
  left out: a shift by a per-sample constant leaves a softmax unchanged.

    >>> weights = score_cam_weights(model, pixel_values, activations, targets, batch_size=32)  # (B, C)
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .batching import eval_mode
from .cam import model_logits
from .targets import unwrap_model

__all__ = ["MASK_EPS", "channel_masks", "inference_forward", "score_cam_weights"]

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
    forward = inference_forward(model, pixel_values)
    scores = masks.new_zeros(constant.shape)
    if constant.any():
        zero_logits = forward(torch.zeros_like(pixel_values[:1])).float()[0]
        scores = torch.where(constant, zero_logits[targets][:, None], scores)
    size = tuple(pixel_values.shape[-2:])
    for chunk in (~constant).nonzero().split(batch_size):
        samples, channels = chunk.unbind(dim=1)
        upsampled = F.interpolate(masks[samples, channels][:, None], size=size, mode="bilinear", align_corners=False)
        logits = forward(upsampled.to(pixel_values.dtype) * pixel_values[samples])
        scores[samples, channels] = logits.float().gather(1, targets[samples, None])[:, 0]
    return scores.softmax(dim=1)


def inference_forward(model: nn.Module, pixel_values: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from inputs to ``model``'s eval-mode logits: an inference copy (folded
    BatchNorm, channels-last) when it reproduces the model's logits on the first images of
    ``pixel_values``, else the model itself in eval mode (see the module docstring)."""
    base = unwrap_model(model)

    def reference(inputs: torch.Tensor) -> torch.Tensor:
        with eval_mode(base):
            return model_logits(base, inputs)

    if pixel_values.ndim != 4 or torch.is_autocast_enabled(pixel_values.device.type):
        return reference
    folded = _folded_copy(base)
    if folded is None:
        return reference

    def fast(inputs: torch.Tensor) -> torch.Tensor:
        return model_logits(folded, inputs.contiguous(memory_format=torch.channels_last))

    probe = pixel_values[:_CHECK_IMAGES]
    with torch.no_grad():
        expected, got = reference(probe).float(), fast(probe).float()
    scale = float(expected.abs().max()) or 1.0
    return fast if float((got - expected).abs().max()) <= _CHECK_TOLERANCE * scale else reference


def _folded_copy(model: nn.Module) -> nn.Module | None:
    """An eval-mode copy of ``model`` with Conv/BatchNorm pairs folded and channels-last memory;
    None where ``torch.fx`` cannot trace it (transformers models, data-dependent control flow)."""
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(copy.deepcopy(model).eval(), inplace=True)
    except Exception:  # noqa: BLE001 - torch.fx raises many kinds on an untraceable model; the model itself is used
        return None
    return folded.to(memory_format=torch.channels_last)
