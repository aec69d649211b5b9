"""The consistency regulariser (docs/METHOD.md, sections 5-7): EMA class maps and the lambda curriculum.

    L = L_cls + lambda_t * L_CAM^train

Example::

    >>> cam = GradCAM(model, differentiable=True)
    >>> reg = GazeConsistencyLoss(num_classes=4)
    >>> out = cam(pixel_values, targets=labels)
    >>> penalty = reg(out.maps, out.logits, labels, out.raw).loss
    >>> loss = F.cross_entropy(out.logits, labels) + LambdaCurriculum(100.0)(epoch) * penalty
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .checks import UNIT_INTERVAL, check_curriculum
from .errors import MetricError
from .variants import DEFAULT_VARIANT, Variant, get_variant, is_zero_map

__all__ = ["GazeConsistencyLoss", "PenaltyOutput", "LambdaCurriculum"]


@dataclass
class PenaltyOutput:
    """One batch of the penalty.

    ``loss`` is this process's share of L_CAM^train: the sum of its samples' deviations times the
    number of processes over the participating samples of *all* processes. Averaged over processes
    (as DDP averages gradients) it is the mean over every participating sample, so N processes give
    the gradient of one process on the union batch, however unevenly the samples take part; in one
    process it is the plain mean. ``n_samples``, ``n_classes`` and ``n_zero_maps`` (all-zero maps
    among the participating samples) count all processes.
    """

    loss: torch.Tensor
    n_samples: int
    n_classes: int
    n_zero_maps: int = 0


class GazeConsistencyLoss(nn.Module):
    """L_CAM^train with one EMA map per class (docs/METHOD.md, sections 5 and 6).

    Per batch, per class ``c``: ``B_c+`` are the correctly classified samples of ``c``; classes
    with ``|B_c+| >= 2`` take part. Their EMA map is set to the batch class mean on first
    observation, afterwards ``ema_c <- alpha * ema_c + (1 - alpha) * mean_c`` (no gradient), and
    this happens *before* the distances, which are taken to the updated ``ema_c``. The loss is the
    mean deviation over the participating samples; exactly 0 without gradient when none take part.
    Under several processes the class sums and counts are all-reduced first, so every process
    holds the same EMA maps and the batch is the union of the processes' batches (see
    :class:`PenaltyOutput`).

    The variant decides the rest: the deviation, which maps the EMA follows (``robust``: the mean
    of the class's *non-zero* maps, a class whose maps are all zero in a batch then leaving its EMA
    as it is; ``pearson``: the mean of their centred unit vectors) and whether, given the maps' pre-ReLU ``raw`` values, a participating sample whose
    map is zero everywhere gets the revival term on top of its deviation
    (:meth:`~hf_gazecons.variants.base.Variant.penalty`), a gradient that brings it back.

    Given ``flipped`` (one flag per sample: the augmentation mirrored the image horizontally), the
    maps and ``raw`` of the flipped samples are mirrored back before anything else: the class map
    lives in the frame of the un-augmented images, and a flipped image meets it flipped.

    Args:
        num_classes: the classifier's number of classes.
        ema_alpha: the EMA factor of the class maps, in [0, 1).
        variant: the deviation, a name of :data:`~hf_gazecons.variants.VARIANTS` or a variant.

    Raises:
        UsageError: ``ema_alpha`` outside [0, 1) or an unknown variant.

    Example::

        >>> out = GradCAM(model, differentiable=True)(pixel_values, targets=labels)
        >>> penalty = GazeConsistencyLoss(num_classes=4, variant="robust")(out.maps, out.logits, labels, out.raw)
        >>> (F.cross_entropy(out.logits, labels) + 50.0 * penalty.loss).backward()
    """

    ema: torch.Tensor
    initialized: torch.Tensor

    def __init__(self, num_classes: int, ema_alpha: float = 0.9, variant: str | Variant = DEFAULT_VARIANT) -> None:
        super().__init__()
        UNIT_INTERVAL.check("ema_alpha", ema_alpha)
        self.num_classes = num_classes
        self.ema_alpha = ema_alpha
        self.variant = get_variant(variant)
        self.register_buffer("ema", torch.zeros(0))  # (K, H', W') once the map size is known
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))

    def forward(
        self,
        maps: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        raw: torch.Tensor | None = None,
        flipped: torch.Tensor | None = None,
    ) -> PenaltyOutput:
        """``maps``: (B, H', W') differentiable Grad-CAM of the true class; ``logits``: (B, K);
        ``raw``: the maps before ReLU and normalisation (``CAMOutput.raw``; used by the variants that
        revive collapsed maps); ``flipped``: (B,) bool, the samples whose image was mirrored horizontally."""
        if flipped is not None:
            maps = _mirror_back(maps, flipped)
            raw = None if raw is None else _mirror_back(raw, flipped)
        correct = logits.detach().argmax(dim=1) == labels
        classes = labels[correct]
        k = self.num_classes
        counts = torch.bincount(classes, minlength=k).to(maps.dtype)
        zero = is_zero_map(maps[correct]).to(maps.dtype)
        zeros = torch.zeros(k, dtype=maps.dtype, device=maps.device).index_add_(0, classes, zero)
        sums = torch.zeros(k, *maps.shape[1:], dtype=maps.dtype, device=maps.device)
        sums.index_add_(0, classes, self.variant.averaged_maps(maps.detach()[correct]))
        world = 1
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            packed = torch.cat([counts, zeros, sums.flatten()])
            dist.all_reduce(packed)
            counts, zeros, sums = packed[:k], packed[k : 2 * k], packed[2 * k :].view_as(sums)
        taking_part = counts >= 2
        averaged = self.variant.class_map_count(counts, zeros)
        self._update_ema(sums, averaged, taking_part & (averaged > 0))
        selected = correct & taking_part[labels]
        n_classes = int(taking_part.sum())
        n_samples = int(counts[taking_part].sum())
        n_zero_maps = int(zeros[taking_part].sum())
        if not selected.any():
            loss = torch.zeros((), device=maps.device, dtype=maps.dtype)
            return PenaltyOutput(loss, n_samples, n_classes, n_zero_maps)
        class_maps = self.ema[labels[selected]]
        deviations = self.variant.penalty(maps[selected], class_maps, None if raw is None else raw[selected])
        return PenaltyOutput(deviations.sum() * (world / n_samples), n_samples, n_classes, n_zero_maps)

    @torch.no_grad()
    def _update_ema(self, sums: torch.Tensor, counts: torch.Tensor, updated: torch.Tensor) -> None:
        """Move the EMA of the ``updated`` classes towards ``sums / counts`` (set it on first sight)."""
        if self.ema.shape != sums.shape:
            if self.initialized.any():
                raise MetricError(
                    f"the map size changed from {tuple(self.ema.shape[1:])} to {tuple(sums.shape[1:])}: one "
                    "regulariser serves one target layer and input size"
                )
            self.ema = torch.zeros_like(sums)
        batch_mean = sums / counts.clamp(min=1)[:, None, None]
        first = updated & ~self.initialized
        later = updated & self.initialized
        self.ema[first] = batch_mean[first]
        self.ema[later] = self.ema_alpha * self.ema[later] + (1 - self.ema_alpha) * batch_mean[later]
        self.initialized |= updated

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        if prefix + "ema" in state_dict:  # the map size is only known once saved
            self.ema = torch.empty_like(state_dict[prefix + "ema"], device=self.ema.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _mirror_back(maps: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """(B, H', W') ``maps`` with those of the ``flipped`` samples mirrored along the width."""
    return torch.where(flipped.to(maps.device, torch.bool)[:, None, None], maps.flip(-1), maps)


@dataclass(frozen=True)
class LambdaCurriculum:
    """The curriculum (docs/METHOD.md, section 7) over 1-based epochs ``e``: 0 for ``e <= t0``, linear
    for ``t0 < e < t1``, ``lambda_max`` for ``e >= t1``. A negative ``lambda_max`` asks for gaze *diversity*.

    ``per_step=True`` ramps with the fractional progress instead of once per epoch: still 0 through
    epoch ``t0`` and ``lambda_max`` from the start of epoch ``t1``, linear from the end of epoch
    ``t0`` to the start of epoch ``t1`` in between.

        >>> LambdaCurriculum(100.0, t0=2, t1=10)(6)
        50.0
    """

    lambda_max: float
    t0: int = 2
    t1: int = 10
    per_step: bool = False

    def __post_init__(self) -> None:
        check_curriculum(self.t0, self.t1, prefix="")

    def __call__(self, epoch: float) -> float:
        """Lambda at the 1-based ``epoch`` ``e``."""
        if epoch <= self.t0:
            return 0.0
        if epoch >= self.t1:
            return float(self.lambda_max)
        return float(self.lambda_max) * (epoch - self.t0) / (self.t1 - self.t0)

    def at_progress(self, epochs_done: float) -> float:
        """Lambda from ``Trainer.state.epoch`` (0-based, fractional epochs completed so far)."""
        if not self.per_step:
            return self(math.floor(epochs_done + 1e-6) + 1)
        if epochs_done < self.t0:  # epochs 1..t0
            return 0.0
        ramp = self.t1 - 1 - self.t0  # from the end of epoch t0 to the start of epoch t1
        if ramp <= 0 or epochs_done >= self.t1 - 1:
            return float(self.lambda_max)
        return float(self.lambda_max) * (epochs_done - self.t0) / ramp
