"""Class activation maps from one forward pass: Grad-CAM (docs/METHOD.md, section 1) and the CAM family
(section 12).

:class:`CAM` computes the maps of any method of :mod:`~hf_gazecons.cam_family` (Grad-CAM++,
LayerCAM, Score-CAM, ...); :class:`GradCAM` is its Grad-CAM case. One forward (and, for the gradient
methods, one gradient) serves several methods at once: :meth:`CAM.maps`.

Two modes share one code path:

* **scoring** (``differentiable=False``): the trunk up to the target runs under ``no_grad``
  (activation memory of plain inference); the graph is built only from the target to the logits,
  and ``torch.autograd.grad`` stops at the target, so no parameter ``.grad`` is touched. The whole
  call costs about one forward.
* **differentiable** (training): maps carry gradients to the parameters through the activations
  ``A``; the channel weights ``alpha`` are constants (as the study's code) unless
  ``second_order=True``.

Both modes give every sample the channel weights of its *own* score, ``dy_i/dA_i``. One backward
of the summed scores gives exactly that when the samples are independent after the target. A layer
after the target that mixes the samples (BatchNorm in train mode) would give sample ``i``
``sum_j dy_j/dA_i``; a probe on the first call finds such coupling by what the layers do, and
``per_sample`` chooses how to undo it (:mod:`~hf_gazecons.per_sample`): ``"held_stats"`` (default)
holds batch-norm statistics constant in the score gradient, still one backward; ``"exact"`` takes
the full derivative from batched vector-Jacobian products, at B times the cost.

Example::

    >>> cam = GradCAM(timm.create_model("resnet18", num_classes=4))
    >>> out = cam(torch.randn(2, 3, 224, 224))
    >>> out.maps.shape, out.logits.shape
    (torch.Size([2, 7, 7]), torch.Size([2, 4]))
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cam_family import DEFAULT_CAM_METHOD, CAMInputs, CAMMethod, check_cam_method, get_cam_method
from .errors import ModelLoadError, TargetLayerError, UsageError
from .per_sample import (
    GradientPath,
    HeldStatistics,
    coupling_key,
    find_path,
    known_path,
    remember_path,
    score_gradients,
    synchronised_batch_norms,
)
from .per_sample_modes import DEFAULT_PER_SAMPLE, PerSample, check_per_sample
from .targets import TargetLayer, resolve_target, to_spatial_map, unwrap_model

__all__ = ["CAM", "GradCAM", "CAMOutput", "model_logits", "normalize_maps", "resize_maps", "is_compiled"]

EPS = 1e-8


@dataclass
class CAMOutput:
    """``maps``: (B, H', W') in [0, 1] at the target's resolution; ``logits``: (B, K); ``raw``: the
    method's map before the ReLU and the normalisation (B, H', W'), for Grad-CAM the weighted
    channel sum ``sum_k alpha_k A^k``."""

    maps: torch.Tensor
    logits: torch.Tensor
    raw: torch.Tensor


def normalize_maps(cam: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per-sample min-max normalisation of (B, H', W') maps to [0, 1] (docs/METHOD.md (1.4))."""
    flat = cam.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    return (cam - low) / (high - low + eps)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample (B, H', W') maps to ``size`` without renormalising: a side that shrinks is averaged
    over areas (each grid cell the mean of the pixels it covers), a side that grows is interpolated
    bilinearly (align_corners=False)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    height, width = size
    pooled = F.adaptive_avg_pool2d(maps[:, None], (min(height, maps.shape[-2]), min(width, maps.shape[-1])))
    if tuple(pooled.shape[-2:]) != (height, width):
        pooled = F.interpolate(pooled, size=(height, width), mode="bilinear", align_corners=False)
    return pooled[:, 0]


class CAM:
    """The maps of one CAM ``method`` (:func:`~hf_gazecons.cam_family.cam_methods`) of ``model`` at
    ``target``, from one forward pass.

    Args:
        model: a classifier (timm, transformers or a plain module); wrapped models (DDP, accelerate,
            torch.compile in scoring mode) work, the forward goes through the wrapper.
        target: ``None`` (resolved automatically, see :mod:`~hf_gazecons.targets`), a module name
            or a timm stage index.
        method: the saliency method (default ``"gradcam"``).
        differentiable: maps that carry gradients to the parameters (training); not for the
            scoring-only methods (``scorecam``, ``eigencam``).
        second_order: differentiate through the gradients in the channel weights too (needs
            ``differentiable``); without it they are constants, the activations are not.
        per_sample: where a layer after the target mixes the samples of a batch, ``"held_stats"``
            (batch-norm statistics held constant in ``dy_i/dA_i``; one backward) or ``"exact"`` (the
            full derivative; B vector-Jacobian products). Without such a layer (eval mode, GroupNorm,
            LayerNorm) both are the same single backward.
        masked_batch_size: masked inputs per forward of Score-CAM (its memory: one forward of that
            many images).

    Calling ``cam(pixel_values, targets=None)`` returns :class:`CAMOutput`; ``targets=None``
    explains the predicted class. :meth:`maps` gives several methods from the same forward. The
    model's train/eval mode and its hooks are left as found. ``per_sample_path`` tells how the last
    call that took gradients got its per-sample gradients (one of
    :data:`~hf_gazecons.per_sample.GRADIENT_PATHS`). A coupling layer whose statistics cannot be held
    (anything but batch norm) is differentiated exactly, with a warning on the first call.

    Raises:
        TargetLayerError: the target cannot be resolved, yields no spatial map, or (differentiable)
            the model is compiled.
        UsageError: an unknown method, a scoring-only method with ``differentiable``,
            ``second_order`` without ``differentiable``, or an unknown ``per_sample``.

    Example::

        >>> cam = CAM(timm.create_model("resnet18", num_classes=4), method="layercam")
        >>> out = cam(torch.randn(2, 3, 224, 224))
        >>> out.maps.shape, out.logits.shape
        (torch.Size([2, 7, 7]), torch.Size([2, 4]))
        >>> cam.maps(torch.randn(2, 3, 224, 224), methods=["gradcam", "eigencam"])["eigencam"].maps.shape
        torch.Size([2, 7, 7])
    """

    def __init__(
        self,
        model: nn.Module,
        target: str | int | None = None,
        method: str = DEFAULT_CAM_METHOD,
        differentiable: bool = False,
        second_order: bool = False,
        per_sample: PerSample = DEFAULT_PER_SAMPLE,
        *,
        masked_batch_size: int = 32,
    ) -> None:
        self.method: CAMMethod = get_cam_method(method)
        if differentiable:
            check_cam_method(method, training=True)
        if second_order and not differentiable:
            raise UsageError("second_order=True needs differentiable=True")
        if differentiable and is_compiled(model):
            raise TargetLayerError(
                "differentiable Grad-CAM needs an eager model: torch.compile fuses the target layer's activation "
                "into a compiled graph, so no gradient can reach the parameters through it; pass the module "
                "before torch.compile (scoring a compiled model works)"
            )
        self.model = model
        self.target: TargetLayer = resolve_target(model, target)
        self.differentiable = differentiable
        self.second_order = second_order
        self.per_sample = check_per_sample(per_sample)
        self.per_sample_path: GradientPath | None = None
        self.masked_batch_size = masked_batch_size

    @property
    def target_name(self) -> str:
        return self.target.name

    def __call__(self, pixel_values: torch.Tensor, targets: torch.Tensor | None = None) -> CAMOutput:
        return self.maps(pixel_values, targets)[self.method.name]

    def maps(
        self, pixel_values: torch.Tensor, targets: torch.Tensor | None = None, methods: Sequence[str] | None = None
    ) -> dict[str, CAMOutput]:
        """The :class:`CAMOutput` of each of ``methods`` (default: this CAM's method) from ONE forward
        pass and, where any of them needs it, one gradient; ``targets=None`` explains the predicted
        class. The methods share the logits."""
        chosen = [self.method] if methods is None else [get_cam_method(name) for name in methods]
        if self.differentiable:
            for method in chosen:
                check_cam_method(method.name, training=True)
        input_size = tuple(pixel_values.shape[-2:])
        needs_gradients = any(method.uses_gradients for method in chosen)
        key = coupling_key(self.model, self.target_name, self.per_sample)
        path = known_path(self.model, key)
        if needs_gradients and path is None and is_compiled(self.model):
            path = self._probe_compiled(pixel_values, key)
        statistics = self._held_statistics(path) if needs_gradients else None
        with self._tap(statistics) as captured, torch.set_grad_enabled(self.differentiable):
            logits = model_logits(self.model, pixel_values)
        if "A" not in captured:
            raise TargetLayerError(f"target {self.target_name!r} did not run during the forward pass")
        activations = captured["A"]
        if targets is None:
            targets = logits.detach().argmax(dim=1)
        targets = targets.to(logits.device)
        gradients = None
        if needs_gradients:
            with torch.enable_grad():  # also inside a caller's no_grad (evaluation loops)
                if path is None:
                    path = self._find_path(logits, activations, statistics, key)
                gradients = score_gradients(
                    path, logits, activations, targets, statistics,
                    retain_graph=self.differentiable, create_graph=self.second_order,
                )  # fmt: skip
            self.per_sample_path = path
            gradients = None if gradients is None else to_spatial_map(gradients, self.target, input_size)
            if gradients is None or not gradients.any():
                raise TargetLayerError(
                    f"the class score does not depend on the spatial positions of {self.target_name!r} "
                    "(e.g. a ViT block output whose head reads only the class token); choose another layer"
                )
            gradients = _at_least_float32(gradients)
        spatial = _at_least_float32(to_spatial_map(activations, self.target, input_size))
        if not self.differentiable:
            logits, spatial = logits.detach(), spatial.detach()
        inputs = CAMInputs(spatial, gradients, pixel_values, targets, self.model, self.masked_batch_size)
        outputs = {}
        for method in chosen:
            with torch.set_grad_enabled(self.differentiable):
                raw = method.compute(inputs)
                maps = normalize_maps(F.relu(raw))  # docs/METHOD.md (1.3) and (1.4)
            outputs[method.name] = CAMOutput(maps=maps, logits=logits, raw=raw if self.differentiable else raw.detach())
        return outputs

    def _held_statistics(self, path: GradientPath | None) -> HeldStatistics | None:
        """The mode that can hold batch-norm statistics in this call, where the mode and path want it
        (the first call, before the path is known, too); never for a compiled model."""
        if self.per_sample != "held_stats" or is_compiled(self.model) or path in ("independent", "exact"):
            return None
        return HeldStatistics()

    def _find_path(
        self, logits: torch.Tensor, activations: torch.Tensor, statistics: HeldStatistics | None, key: tuple
    ) -> GradientPath:
        """Probe the coupling after the target (first call), keep the answer, warn where batch-norm
        statistics cannot account for it in ``held_stats`` mode."""
        path, lasting = find_path(logits, activations, statistics)
        if lasting:
            remember_path(self.model, key, path)
            if self.per_sample == "held_stats" and path in ("exact", "held_stats+exact"):
                warnings.warn(
                    f"a layer after the Grad-CAM target {self.target_name!r} mixes the samples of a batch and is "
                    "not a batch norm whose statistics can be held: each sample's map comes from the exact "
                    "derivative (one vector-Jacobian product per sample, a cost that grows with the square of "
                    "the batch)",
                    stacklevel=3,
                )
        return path

    def _probe_compiled(self, pixel_values: torch.Tensor, key: tuple) -> GradientPath:
        """The path of a compiled model, whose graph allows one backward only: probed on a separate
        forward of its eager module over the first two samples, after which the module's buffers
        (BatchNorm running statistics) and the random state are restored. Batched products cannot
        run through a compiled graph, so coupling after the target is refused."""
        eager = unwrap_model(self.model)
        buffers = [(buffer, buffer.clone()) for buffer in eager.buffers()]
        devices = [pixel_values.device] if pixel_values.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                with self._tap(None) as captured, torch.no_grad():
                    logits = model_logits(eager, pixel_values[:2])
                if "A" not in captured:
                    raise TargetLayerError(f"target {self.target_name!r} did not run during the forward pass")
                with torch.enable_grad():
                    path, lasting = find_path(logits, captured["A"], None)
        finally:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
        if not lasting:  # one sample, or scores that do not depend on A (refused later): nothing to couple
            return "independent"
        if path == "independent":
            remember_path(self.model, key, path)
        else:
            raise TargetLayerError(
                f"a layer after the Grad-CAM target {self.target_name!r} mixes the samples of a batch (BatchNorm in "
                "train mode?), and per-sample maps cannot be taken through a compiled graph: score the model in "
                "eval mode, or pass the module before torch.compile"
            )
        return path

    @contextmanager
    def _tap(self, statistics: HeldStatistics | None) -> Iterator[dict[str, Any]]:
        """Capture the target activation ``A``; downstream layers get a copy (in-place safe).

        In scoring mode the forward runs under ``no_grad`` and grad is switched on at the target,
        so only the target->logits part of the network builds a graph, with ``A`` as its leaf.
        ``statistics`` (if any) is active from the target to the end of the forward.
        """
        captured: dict[str, Any] = {}
        differentiable = self.differentiable
        entered: list[HeldStatistics] = []

        def capture(output: Any) -> Any:
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if not differentiable:
                torch.set_grad_enabled(True)
                tensor = tensor.detach().requires_grad_()
            captured["A"] = tensor
            if statistics is not None and not entered:
                statistics.__enter__()
                entered.append(statistics)
            copy = tensor.clone()
            if isinstance(output, (tuple, list)):
                return type(output)([copy, *output[1:]])
            return copy

        def synchronised_after_target(module: nn.Module, args: Any) -> None:
            if "A" in captured:
                raise TargetLayerError(
                    f"a SyncBatchNorm after the Grad-CAM target {self.target_name!r} shares batch statistics across "
                    "processes, through which no per-sample map can be taken; choose a target after it, or "
                    "train with BatchNorm (statistics per process)"
                )

        handles = [
            m.register_forward_pre_hook(synchronised_after_target) for m in synchronised_batch_norms(self.model)
        ]
        owner, method = self.target.owner, self.target.method
        patched_before = vars(owner).get(method) if method else None
        if method is None:
            handles.append(owner.register_forward_hook(lambda module, args, output: capture(output)))
        else:
            original = getattr(owner, method)
            setattr(owner, method, lambda *args, **kwargs: capture(original(*args, **kwargs)))
        try:
            yield captured
        finally:
            for mode in entered:
                mode.__exit__(None, None, None)
            for handle in handles:
                handle.remove()
            if method is not None:
                if patched_before is None:
                    delattr(owner, method)
                else:
                    setattr(owner, method, patched_before)


class GradCAM(CAM):
    """Grad-CAM of ``model`` at ``target`` (docs/METHOD.md, section 1): ``CAM(model, target, "gradcam", ...)``.

    Example::

        >>> out = GradCAM(timm.create_model("resnet18", num_classes=4))(torch.randn(2, 3, 224, 224))
        >>> out.maps.shape, out.logits.shape
        (torch.Size([2, 7, 7]), torch.Size([2, 4]))
    """

    def __init__(
        self,
        model: nn.Module,
        target: str | int | None = None,
        differentiable: bool = False,
        second_order: bool = False,
        per_sample: PerSample = DEFAULT_PER_SAMPLE,
    ) -> None:
        super().__init__(model, target, "gradcam", differentiable, second_order, per_sample)


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Maps are computed in float32 (float64 for a float64 model), whatever the autocast dtype."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` (or a wrapper around it) is a ``torch.compile`` module."""
    while True:
        if hasattr(model, "_orig_mod"):
            return True
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return False
        model = inner


def model_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Call ``model`` (transformers models by keyword) and return its (B, K) logits."""
    if type(unwrap_model(model)).__module__.startswith("transformers."):
        output = model(pixel_values=pixel_values)
    else:
        output = model(pixel_values)
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ModelLoadError(
        f"cannot find logits in a model output of type {type(output).__name__}: Grad-CAM needs a classifier whose "
        "forward returns logits (a tensor, a tuple starting with them, or an output with .logits)"
    )
