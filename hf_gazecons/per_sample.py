"""Per-sample score gradients ``dy_i/dA_i`` for Grad-CAM, also where layers after the target couple
the samples of a batch (docs/METHOD.md, per-sample gradients).

A layer *couples* the samples when one sample's output depends on another sample's input: BatchNorm
in train mode (batch statistics), timm's EvoNorm B0 (batch variance), a hand-written normalisation
over the batch. One backward of the summed scores would then give sample ``i`` the mixture
``sum_j dy_j/dA_i``. Coupling is found by what the network does, not by the class of its layers:
:func:`couples_samples` differentiates the first sample's logits and looks whether the gradient
reaches another sample's target activation. The answer is kept per model, target, mode and
train/eval state of its modules (:func:`known_path`), so this probe (one backward from the logits to
the target) runs on the first call only; it runs on that call's own graph, so it adds no forward
and leaves BatchNorm running statistics, buffers and the random state alone.

The answer picks one of :data:`GRADIENT_PATHS`:

* ``independent``: nothing after the target couples the samples; one backward of the summed scores.
* ``held_stats`` (``per_sample="held_stats"``): the only coupling layers are batch-norm calls
  (``torch.nn.functional.batch_norm`` with batch statistics: ``BatchNorm1d/2d/3d``, timm's
  ``BatchNormAct2d``, ``SyncBatchNorm`` within one process), whose statistics
  :class:`HeldStatistics` holds constant in the score gradient; one backward. Forward values and
  every other gradient (the training loss's) stay the exact train-mode ones.
* ``exact``: batched vector-Jacobian products, one one-hot row per sample, of which the diagonal
  ``dy_i/dA_i`` is kept; the full derivative, at B times the backward of the batch.
* ``held_stats+exact``: batch-norm statistics held, and another layer still couples: batched products.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .per_sample_modes import PerSample

__all__ = [
    "GRADIENT_PATHS",
    "GradientPath",
    "HeldStatistics",
    "coupling_key",
    "couples_samples",
    "find_path",
    "known_path",
    "remember_path",
    "score_gradients",
    "synchronised_batch_norms",
]

GradientPath = Literal["independent", "held_stats", "exact", "held_stats+exact"]
GRADIENT_PATHS: tuple[GradientPath, ...] = ("independent", "held_stats", "exact", "held_stats+exact")
_HOLDING: tuple[GradientPath, ...] = ("held_stats", "held_stats+exact")
_BATCHED: tuple[GradientPath, ...] = ("exact", "held_stats+exact")

_BATCH_NORM = inspect.signature(F.batch_norm)
_BATCHED_GRADIENT_ELEMENTS = 2**26  # 256 MiB of float32 per chunk of per-sample gradients
_PATHS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], GradientPath]] = weakref.WeakKeyDictionary()


class HeldStatistics(TorchFunctionMode):
    """A torch function mode, entered once the target has run: every ``F.batch_norm`` call with batch
    statistics gets a backward that, inside :meth:`holding`, leaves the statistics' own path out (the
    gradient reaching the call's input is ``weight / sqrt(var + eps) * grad``, ``var`` the biased batch
    variance the call normalised with) and is batch norm's exact backward otherwise. ``count``: how
    many such calls ran."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.held = False

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if func is F.batch_norm:
            call = _BATCH_NORM.bind(*args, **kwargs)
            call.apply_defaults()
            options = call.arguments
            if options["training"]:
                self.count += 1
                output = _HeldBatchNorm.apply(output, options["input"], options["weight"], options["eps"], self)
        return output

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Backward passes inside hold the statistics constant."""
        self.held = True
        try:
            yield
        finally:
            self.held = False


class _HeldBatchNorm(torch.autograd.Function):
    """Identity on a batch norm's ``output`` (a copy: later in-place layers may change it) whose
    backward is ``output``'s own (batch norm's exact one) unless its :class:`HeldStatistics` holds:
    then the gradient goes straight to ``inputs``, scaled per channel by ``weight * rsqrt(var + eps)``.
    Differentiable, for second-order Grad-CAM."""

    @staticmethod
    def forward(
        ctx: Any,
        output: torch.Tensor,
        inputs: torch.Tensor,
        weight: torch.Tensor | None,
        eps: float,
        statistics: HeldStatistics,
    ) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.eps, ctx.statistics = eps, statistics
        return output.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if not ctx.statistics.held:
            return grad, None, None, None, None
        inputs, weight = ctx.saved_tensors
        wide = inputs.to(torch.promote_types(inputs.dtype, torch.float32))
        scale = torch.rsqrt(wide.var(dim=[0, *range(2, inputs.dim())], unbiased=False) + ctx.eps)
        if weight is not None:
            scale = scale * weight
        shape = (1, -1) + (1,) * (inputs.dim() - 2)
        return None, grad * scale.to(grad.dtype).view(shape), None, None, None


def coupling_key(model: nn.Module, target_name: str, mode: PerSample) -> tuple[Any, ...]:
    """What the coupling after the target depends on: the target, the mode and every module's train/eval state."""
    return (target_name, mode, tuple(module.training for module in model.modules()))


def known_path(model: nn.Module, key: tuple[Any, ...]) -> GradientPath | None:
    """The path found earlier for ``model`` under ``key`` (:func:`coupling_key`), or None."""
    return _PATHS.get(model, {}).get(key)


def remember_path(model: nn.Module, key: tuple[Any, ...], path: GradientPath) -> None:
    _PATHS.setdefault(model, {})[key] = path


def couples_samples(logits: torch.Tensor, activations: torch.Tensor) -> bool | None:
    """Whether the first sample's logits depend on another sample's target activations: one backward
    of their weighted sum (weights 1..2, no random numbers) on the call's graph, which is kept. None
    when they depend on no activation at all, so that the probe cannot tell."""
    weights = torch.linspace(1.0, 2.0, logits.shape[-1], dtype=logits.dtype, device=logits.device)
    (gradient,) = torch.autograd.grad(
        (logits[0] * weights).sum(), activations, retain_graph=True, allow_unused=True
    )
    if gradient is None or not bool(gradient.any()):
        return None
    return bool(gradient[1:].any())


def find_path(
    logits: torch.Tensor, activations: torch.Tensor, statistics: HeldStatistics | None
) -> tuple[GradientPath, bool]:
    """The path of this call (run with ``statistics`` active, or None), and whether it may be kept for
    later calls: not from a batch of one sample (nothing to couple, so nothing learnt) or when the
    probe cannot tell (then the batched products, which are right either way)."""
    holding = statistics is not None and statistics.count > 0
    one_backward, batched = ("held_stats", "held_stats+exact") if holding else ("independent", "exact")
    if logits.shape[0] < 2:
        return one_backward, False
    with statistics.holding() if holding else nullcontext():  # type: ignore[union-attr]
        coupled = couples_samples(logits, activations)
    if coupled is None:
        return batched, False
    return (batched if coupled else one_backward), True


def score_gradients(
    path: GradientPath,
    logits: torch.Tensor,
    activations: torch.Tensor,
    targets: torch.Tensor,
    statistics: HeldStatistics | None,
    retain_graph: bool,
    create_graph: bool,
) -> torch.Tensor | None:
    """``dy_i^{c_i} / dA_i`` for every sample ``i`` along ``path`` (None where the scores do not depend on ``A``)."""
    with statistics.holding() if path in _HOLDING else nullcontext():  # type: ignore[union-attr]
        if path not in _BATCHED:  # samples independent after the target: one backward of the summed scores
            score = logits.gather(1, targets.view(-1, 1)).sum()
            (gradients,) = torch.autograd.grad(
                score, activations, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
            )
            return gradients
        return _batched_gradients(logits, activations, targets, retain_graph, create_graph)


def _batched_gradients(
    logits: torch.Tensor, activations: torch.Tensor, targets: torch.Tensor, retain_graph: bool, create_graph: bool
) -> torch.Tensor | None:
    """Batched vector-Jacobian products, one one-hot row per sample, in chunks; the diagonal ``dy_i / dA_i``."""
    batch = logits.shape[0]
    rows = _chunk_size(activations)
    parts = []
    for start in range(0, batch, rows):
        index = torch.arange(start, min(start + rows, batch), device=logits.device)
        one_hot = torch.zeros(len(index), *logits.shape, dtype=logits.dtype, device=logits.device)
        one_hot[torch.arange(len(index)), index, targets[index]] = 1.0  # row k selects y_i, i = index[k]
        last = start + rows >= batch
        (batched,) = torch.autograd.grad(
            logits,
            activations,
            grad_outputs=one_hot,
            is_grads_batched=True,
            retain_graph=retain_graph or not last,
            create_graph=create_graph,
            allow_unused=True,
        )
        if batched is None:
            return None
        parts.append(batched[torch.arange(len(index)), index])  # the diagonal: dy_i / dA_i
    return torch.cat(parts)


def _chunk_size(activations: torch.Tensor) -> int:
    """How many samples' batched gradients (each the size of the whole ``A``) to take at once."""
    return max(1, min(activations.shape[0], _BATCHED_GRADIENT_ELEMENTS // max(1, activations.numel())))


def synchronised_batch_norms(model: nn.Module) -> list[nn.SyncBatchNorm]:
    """The ``SyncBatchNorm`` layers of ``model`` that share batch statistics across several processes in
    this call (train mode, a process group of more than one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return []
    return [
        module
        for module in model.modules()
        if isinstance(module, nn.SyncBatchNorm)
        and module.training
        and dist.get_world_size(module.process_group or dist.group.WORLD) > 1
    ]
