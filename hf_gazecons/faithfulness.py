"""Faithfulness of saliency maps: does removing what a map calls important change the prediction?

* :func:`deletion_insertion` - deletion and insertion (Petsiuk et al., "RISE", 2018), as torchcam
  0.5.0's ``DeletionInsertionMetric`` computes them: pixels ranked by the map (upsampled bilinearly,
  ``align_corners=False``; a stable descending sort), replaced by a baseline (deletion) or restored
  onto it (insertion) in ``steps`` equal fractions; the class's softmax probability after each step;
  the area under each curve by the trapezoid rule. Lower deletion and higher insertion are better.
* :func:`road` - ROAD (Rong et al., "A consistent and efficient evaluation strategy for attribution
  methods", 2022), as pytorch-grad-cam 1.5.7 computes it: at each percentile ``p`` the pixels at or
  above the map's ``p``-th percentile (most relevant first, MoRF) or at or below its ``(100 - p)``-th
  (least relevant first, LeRF) are imputed from their neighbours (:mod:`~hf_gazecons.imputation`),
  and the class's softmax probability after imputation minus before is returned. A faithful map
  makes MoRF strongly negative and LeRF near 0.

Both take a batch of images, their maps (any grid) and the class each map explains, and run the
perturbed images through the model in chunks of ``batch_size``. A map without a ranking (constant,
an all-zero map among them) gives NaN: it says nothing about which pixels matter. The definitions are in
docs/METHOD.md, section 11.

    >>> deletion, insertion = deletion_insertion(model, pixel_values, out.maps, out.logits.argmax(1))
    >>> morf, lerf = road(model, pixel_values, out.maps, out.logits.argmax(1))    # (B, 9) each
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .batching import eval_mode
from .cam import model_logits
from .imputation import noisy_linear_impute

__all__ = [
    "ROAD_PERCENTILES",
    "class_probability",
    "deletion_insertion",
    "deletion_steps",
    "percentile",
    "road",
    "road_keep_masks",
    "upsample_maps",
]

ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""pytorch-grad-cam's default percentiles of ROAD."""

_IMPUTATION_BYTES_PER_PIXEL = 160  # the solver's vectors, stencils and coarse grids, per system and pixel (3 channels)
_IMPUTATION_MEMORY = 2**26  # bytes of imputation systems solved together (small: their vectors stay in cache)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H', W') maps interpolated bilinearly (``align_corners=False``) to ``size``, float32."""
    return F.interpolate(maps.float()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def class_probability(
    model: nn.Module, pixel_values: torch.Tensor, classes: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """(B,) softmax probability of ``classes`` for each image, in forwards of ``batch_size`` images."""
    probabilities = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(pixel_values), batch_size):
            logits = model_logits(model, pixel_values[start : start + batch_size]).float()
            chosen = classes[start : start + batch_size].to(logits.device)
            probabilities.append(logits.softmax(dim=-1).gather(1, chosen[:, None])[:, 0])
    return torch.cat(probabilities) if probabilities else torch.zeros(0, device=pixel_values.device)


def _ranked(maps: torch.Tensor) -> torch.Tensor:
    """(B,) bool: maps that rank pixels (not constant, finite)."""
    flat = maps.flatten(1)
    return torch.isfinite(flat).all(dim=1) & (flat.amax(dim=1) > flat.amin(dim=1))


def _check(pixel_values: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor) -> None:
    if pixel_values.ndim != 4 or maps.ndim != 3 or classes.ndim != 1:
        raise ValueError("pixel_values (B, C, H, W), maps (B, H', W') and classes (B,) expected")
    if not len(pixel_values) == len(maps) == len(classes):
        raise ValueError(f"{len(pixel_values)} images, {len(maps)} maps and {len(classes)} classes")


def deletion_steps(num_pixels: int, steps: int) -> list[int]:
    """How many pixels each point of the curves perturbs: ``0, s, 2s, ...`` below ``num_pixels`` with
    ``s = ceil(num_pixels / steps)``, then ``num_pixels`` (torchcam's grid)."""
    step = math.ceil(num_pixels / steps)
    return [*range(0, num_pixels, step), num_pixels]


def deletion_insertion(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    steps: int = 20,
    baseline: float | torch.Tensor = 0.0,
    *,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion AUC of each map (see the module).

    Args:
        model: the classifier (its logits are softmaxed); run in eval mode, its modes restored.
        pixel_values: (B, C, H, W) model inputs.
        maps: (B, H', W') saliency maps, any grid.
        classes: (B,) the class each map explains.
        steps: the number of equal fractions of the pixels perturbed between two points.
        baseline: the value of a removed pixel (a number, or a tensor that broadcasts to the images).
        batch_size: perturbed images per forward.

    Returns:
        ``(deletion_auc, insertion_auc)``, (B,) each; NaN for a map without a ranking.
    """
    _check(pixel_values, maps, classes)
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    batch, height, width = len(pixel_values), *pixel_values.shape[-2:]
    num_pixels = height * width
    base = torch.as_tensor(baseline, dtype=pixel_values.dtype, device=pixel_values.device)
    shared = base.ndim < 4 or base.shape[0] == 1  # one all-baseline image serves every sample
    base = base.expand(1 if shared else batch, *pixel_values.shape[1:])
    counts = deletion_steps(num_pixels, steps)
    fractions = torch.tensor(counts, dtype=torch.float32, device=pixel_values.device) / num_pixels
    deletion = torch.full((batch, len(counts)), torch.nan, device=pixel_values.device)
    insertion = deletion.clone()
    saliency = upsample_maps(maps, (height, width)).to(pixel_values.device).flatten(1)
    ranked = _ranked(maps.to(pixel_values.device))
    index = ranked.nonzero()[:, 0]
    if len(index) == 0:
        return deletion[:, 0], insertion[:, 0]
    order = torch.argsort(saliency[index], dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1)
    images, targets = pixel_values[index], classes[index].to(pixel_values.device)
    original = class_probability(model, images, targets, batch_size)
    if shared:  # one forward of the all-baseline image, its probability of every sample's class
        with eval_mode(model), torch.inference_mode():
            empty = model_logits(model, base).float().softmax(dim=-1)[0, targets]
    else:
        empty = class_probability(model, base[index], targets, batch_size)
    curves = torch.empty(2, len(index), len(counts), device=pixel_values.device)
    curves[0, :, 0] = curves[1, :, -1] = original
    curves[0, :, -1] = curves[1, :, 0] = empty
    interior = torch.tensor(counts[1:-1], device=pixel_values.device)
    # jobs: (curve, sample, point) over both curves, every sample and the interior points
    curve_of, sample_of, point_of = torch.meshgrid(
        torch.arange(2), torch.arange(len(index)), torch.arange(len(interior)), indexing="ij"
    )
    curve_of, sample_of, point_of = curve_of.flatten(), sample_of.flatten(), point_of.flatten()
    flat_images = images.flatten(2)
    flat_base = base.flatten(2)
    scores = torch.empty(len(curve_of), device=pixel_values.device)
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(curve_of), batch_size):
            curve = curve_of[start : start + batch_size].to(pixel_values.device)
            sample = sample_of[start : start + batch_size].to(pixel_values.device)
            relevant = ranks[sample] < interior[point_of[start : start + batch_size]].to(pixel_values.device)[:, None]
            use_original = torch.where(curve[:, None] == 1, relevant, ~relevant)
            background = flat_base[0 if shared else index[sample]]
            perturbed = torch.where(use_original[:, None], flat_images[sample], background)
            logits = model_logits(model, perturbed.reshape(-1, *pixel_values.shape[1:])).float()
            scores[start : start + batch_size] = logits.softmax(dim=-1).gather(1, targets[sample][:, None])[:, 0]
    curves[curve_of, sample_of, point_of + 1] = scores
    auc = torch.trapezoid(curves, fractions, dim=-1)
    deletion_auc = torch.full((batch,), torch.nan, device=pixel_values.device)
    insertion_auc = deletion_auc.clone()
    deletion_auc[index], insertion_auc[index] = auc[0], auc[1]
    return deletion_auc, insertion_auc


def percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """(B,) the ``q``-th percentile of each row of (B, N) float32 ``values``, computed as
    ``numpy.percentile`` computes it for a float32 array (linear interpolation in float32)."""
    sorted_values = values.sort(dim=1).values
    virtual = (values.shape[1] - 1) * (q / 100)
    below = math.floor(virtual)
    gamma = virtual - below
    low = sorted_values[:, min(below, values.shape[1] - 1)]
    high = sorted_values[:, min(below + 1, values.shape[1] - 1)]
    difference = high - low
    if gamma >= 0.5:
        return high - difference * (1 - gamma)
    return low + difference * gamma


def road_keep_masks(saliency: torch.Tensor, percentiles: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels ROAD keeps, ``(morf, lerf)``, (B, P, H, W) bool each, from (B, H, W) float32 maps:
    MoRF keeps the pixels below the map's ``p``-th percentile, LeRF those where ``1 - map`` is below
    its ``p``-th percentile (pytorch-grad-cam's ``RemoveMostRelevantFirst`` and
    ``RemoveLeastRelevantFirst``)."""
    flat = saliency.flatten(1).float()
    inverse = 1 - flat

    def keep(values: torch.Tensor) -> torch.Tensor:
        return torch.stack([values < percentile(values, p)[:, None] for p in percentiles], dim=1)

    return keep(flat).unflatten(-1, saliency.shape[-2:]), keep(inverse).unflatten(-1, saliency.shape[-2:])


def road(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = 0.0,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ROAD of each map: the class probability after imputing the pixels the map ranks most
    (MoRF) or least (LeRF) relevant, minus before, at each percentile (see the module).

    Args:
        model: the classifier (its logits are softmaxed); run in eval mode, its modes restored.
        pixel_values: (B, C, H, W) model inputs.
        maps: (B, H', W') saliency maps, any grid (upsampled bilinearly to the images).
        classes: (B,) the class each map explains.
        percentiles: the percentiles ``p`` of the map that split kept and imputed pixels.
        noise: standard deviation of the noise added to imputed pixels (pytorch-grad-cam's
            ``NoisyLinearImputer`` default is 0.01; 0 makes the result deterministic).
        generator: the random generator of the noise.
        batch_size: imputed images per forward.

    Returns:
        ``(morf, lerf)``, (B, P) each; NaN where a map has no ranking.
    """
    _check(pixel_values, maps, classes)
    batch, channels, height, width = pixel_values.shape
    count = len(percentiles)
    morf = torch.full((batch, count), torch.nan, device=pixel_values.device)
    lerf = morf.clone()
    saliency = upsample_maps(maps, (height, width)).to(pixel_values.device)
    index = _ranked(maps.to(pixel_values.device)).nonzero()[:, 0]
    if len(index) == 0:
        return morf, lerf
    targets = classes[index].to(pixel_values.device)
    before = class_probability(model, pixel_values[index], targets, batch_size)
    keep_morf, keep_lerf = road_keep_masks(saliency[index], percentiles)
    keep = torch.cat([keep_morf, keep_lerf], dim=1)  # (b, 2P, H, W)
    per_image = 2 * count * height * width * max(channels, 3) // 3 * _IMPUTATION_BYTES_PER_PIXEL
    chunk = max(1, _IMPUTATION_MEMORY // per_image)
    after = torch.empty(len(index), 2 * count, device=pixel_values.device)
    for start in range(0, len(index), chunk):
        part = slice(start, start + chunk)
        images = pixel_values[index[part]].float().repeat_interleave(2 * count, dim=0)
        imputed = noisy_linear_impute(images, keep[part].flatten(0, 1), noise, generator=generator)
        repeated = targets[part].repeat_interleave(2 * count)
        probability = class_probability(model, imputed.to(pixel_values.dtype), repeated, batch_size)
        after[part] = probability.view(-1, 2 * count)
    change = after - before[:, None]
    morf[index], lerf[index] = change[:, :count], change[:, count:]
    return morf, lerf
