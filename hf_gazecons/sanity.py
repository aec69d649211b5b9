"""Sanity checks for Grad-CAM gaze (docs/METHOD.md, section 13): do the maps still depend on the model?

A consistency objective can be satisfied by maps that ignore what the network computes (every image
gets the same map). :func:`cascading_randomization` is the model-parameter randomisation test of
Adebayo et al. (2018, "Sanity checks for saliency maps"): starting from the top (the classifier)
and going down through the backbone's stages to the stem, the weights are re-initialised
*cumulatively* in a copy of the model; after each step the Grad-CAM maps of the same samples are
compared with the original model's maps by Spearman rank correlation. Maps that stay highly
correlated after the weights that produced them were destroyed do not explain the model.

A second way to be "consistent" without explaining anything is a map with no positive evidence at
all: ``ReLU(sum_k alpha_k A^k)`` is zero everywhere, the normalised map is all zero, and all such
maps agree perfectly. Each step therefore also counts the constant maps (``n_constant_original``,
``n_constant_randomized``); they have no rank correlation and are left out of the Spearman mean.

The class explained is fixed for all steps: the ORIGINAL model's prediction (Adebayo et al.'s
choice; ``class_target="label"`` uses the true label instead), so that only the weights change.

For localisation (mass of the map inside a ground-truth mask, pointing game), the metric already
reports ``energy_pointing_game``/``pointing_game`` on data with masks (``builtin:shapes``); the
sweep tables carry them per backbone and lambda.

On every finished run of a sweep: ``hf-gazecons sweep ... --sanity`` (:mod:`hf_gazecons.sweep.sanity`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .batching import batch_source, eval_mode, unpack_batch
from .cam import GradCAM
from .errors import DataError, UsageError
from .models import LoadedModel
from .preprocessing import Preprocessing
from .stats import spearman
from .targets import is_timm_model, unwrap_model

__all__ = [
    "cascading_randomization",
    "randomization_steps",
    "randomize_modules",
]


# ---------------------------------------------------------------------------------------------
# cascading randomisation
# ---------------------------------------------------------------------------------------------
def _has_own_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def _classifier_name(model: nn.Module) -> str | None:
    name = getattr(model, "pretrained_cfg", {}).get("classifier") if hasattr(model, "pretrained_cfg") else None
    modules = dict(model.named_modules())
    if isinstance(name, str) and name in modules:
        return name
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else getattr(model, "classifier", None)
    if isinstance(head, nn.Module):
        return next((n for n, m in modules.items() if m is head and n), None)
    return None


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def randomization_steps(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The cascade, top first: ``[(step name, [module names re-initialised at this step]), ...]``.

    timm models: the classifier, then what lies between the last stage and the classifier (e.g.
    ``conv_head``/``bn2``, ``head.norm``), then the ``feature_info`` stages from last to first, then
    the stem (everything before the first stage). Other models: the classifier, then the remaining
    top-level children from last to first. Steps without parameters or buffers are left out.
    """
    model = unwrap_model(model)
    named = [(n, m) for n, m in model.named_modules() if n and _has_own_state(m)]
    classifier = _classifier_name(model)
    steps: list[tuple[str, list[str]]] = []
    if classifier:
        steps.append((classifier, [n for n, _ in named if _within(n, classifier)]))
    taken = {n for _, names in steps for n in names}
    stages = [info["module"] for info in getattr(model, "feature_info", None) or []] if is_timm_model(model) else []
    if stages:
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        position = [order.get(s, -1) for s in stages]
        segments: dict[str, list[str]] = {s: [] for s in stages}  # a stage and what leads into it
        head, stem = [], []
        for n, _ in named:
            if n in taken:
                continue
            owner = next((s for s in stages if _within(n, s)), None)
            if owner is None:
                following = [s for s, p in zip(stages, position) if p > order[n]]
                if not following:
                    head.append(n)
                    continue
                owner = following[0]
                if owner == stages[0]:
                    stem.append(n)
                    continue
            segments[owner].append(n)
        if head:
            steps.append((_label(head, stages), head))
        for stage in reversed(stages):
            members = segments[stage]
            if members:
                own = any(_within(n, stage) for n in members)
                others = [n for n in members if not _within(n, stage)]
                parts = ([_label(others, stages)] if others else []) + ([stage] if own else [])
                steps.append(("+".join(parts), members))
        if stem:
            steps.append((_label(stem, stages), stem))
    else:
        for child, _ in reversed(list(model.named_children())):
            members = [n for n, _ in named if _within(n, child) and n not in taken]
            if members:
                steps.append((child, members))
    return steps


def _label(names: Sequence[str], stages: Sequence[str] = ()) -> str:
    """Short name of a group of modules: their top-level names (two levels inside a stage container)."""
    containers = {s.split(".")[0] for s in stages if "." in s}
    parts = [".".join(n.split(".")[:2]) if n.split(".")[0] in containers else n.split(".")[0] for n in names]
    return "+".join(dict.fromkeys(parts))


def randomize_modules(model: nn.Module, names: Iterable[str]) -> None:
    """Re-initialise the named modules in place: ``reset_parameters()`` where the module has it
    (kaiming-uniform convolutions and linears, unit/zero norms with fresh running statistics),
    otherwise its own parameters ~ N(0, 0.02^2). Seed torch beforehand for a reproducible draw."""
    modules = dict(unwrap_model(model).named_modules())
    with torch.no_grad():
        for name in names:
            module = modules[name]
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for parameter in module.parameters(recurse=False):
                parameter.normal_(0.0, 0.02)


def _collect(
    data: Any, preprocessing: Preprocessing | None, max_samples: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(data, torch.Tensor):
        return data[:max_samples], None
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0][:max_samples], torch.as_tensor(data[1])[:max_samples]
    images, labels, have = [], [], 0
    for batch in batch_source(data, preprocessing, batch_size, 0):
        pixel_values, batch_labels, _ = unpack_batch(batch)
        images.append(pixel_values)
        labels.append(batch_labels)
        have += len(pixel_values)
        if have >= max_samples:
            break
    if not images:
        raise DataError("no samples in the data")
    return torch.cat(images)[:max_samples], torch.cat(labels)[:max_samples]


def _maps(
    model: nn.Module, target: str | int | None, pixel_values: torch.Tensor, classes: torch.Tensor, batch_size: int
) -> torch.Tensor:
    cam = GradCAM(model, target)
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for x, c in zip(pixel_values.split(batch_size), classes.split(batch_size)):
            out.append(cam(x.to(device), targets=c.to(device)).maps.float().cpu())
    return torch.cat(out)


def _predictions(
    model: nn.Module, target: str | int | None, pixel_values: torch.Tensor, batch_size: int
) -> torch.Tensor:
    cam = GradCAM(model, target)
    device = next(model.parameters()).device
    with eval_mode(model):
        return torch.cat([cam(x.to(device)).logits.argmax(1).cpu() for x in pixel_values.split(batch_size)])


def cascading_randomization(
    model: nn.Module | LoadedModel,
    data: Any,
    *,
    preprocessing: Preprocessing | None = None,
    target: str | int | None = None,
    class_target: Literal["prediction", "label"] = "prediction",
    max_samples: int = 64,
    batch_size: int = 32,
    seed: int = 0,
    steps: Sequence[tuple[str, Sequence[str]]] | None = None,
) -> list[dict[str, Any]]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) of ``model``'s Grad-CAM maps.

    ``data``: a ``datasets.Dataset`` (with ``preprocessing``, implied by a :class:`LoadedModel`), an
    iterable of batches as :func:`~hf_gazecons.metric.gaze_consistency` takes, a tensor of
    ``pixel_values`` or a ``(pixel_values, labels)`` pair; the first ``max_samples`` are used.
    ``target``: the Grad-CAM layer (as GradCAM takes it). The class explained at every step is the
    original model's prediction (``class_target="label"``: the true label).

    Returns one dict per step, the first being the unchanged model (``randomized_up_to="none"``,
    correlation 1 by construction)::

        {"step": 0, "randomized_up_to": "none", "modules": [], "spearman_mean": 1.0,
         "spearman_std": 0.0, "n_samples": 64, "n_undefined": 0, "n_constant_original": 0,
         "n_constant_randomized": 0}

    ``spearman_mean``/``spearman_std`` (population std) are over the samples whose two maps both
    vary; a constant map (e.g. all zero after the ReLU) has no rank correlation and is counted in
    ``n_undefined``; ``n_constant_original``/``n_constant_randomized`` count the constant maps.
    The model itself is not modified (a deep copy is randomised).

    Raises:
        DataError: no samples, or ``class_target="label"`` without labels.
        UsageError: an unknown ``class_target``.

    Example::

        >>> steps = cascading_randomization(load_model("out/resnet18-l100"), dataset, max_samples=64)
        >>> [(s["randomized_up_to"], round(s["spearman_mean"], 2)) for s in steps[:3]]
        [('none', 1.0), ('fc', 0.07), ('layer4', 0.05)]
    """
    if isinstance(model, LoadedModel):
        preprocessing = preprocessing or model.preprocessing
        model = model.model
    if class_target not in ("prediction", "label"):
        raise UsageError(f"class_target must be 'prediction' or 'label', got {class_target!r}")
    model = unwrap_model(model)
    pixel_values, labels = _collect(data, preprocessing, max_samples, batch_size)
    if class_target == "label":
        if labels is None:
            raise DataError("class_target='label' needs labelled data")
        classes = labels.long()
    else:
        classes = _predictions(model, target, pixel_values, batch_size)
    original = _maps(model, target, pixel_values, classes, batch_size)
    randomized = copy.deepcopy(model)
    plan = list(steps) if steps is not None else randomization_steps(randomized)
    results = [_entry(0, "none", [], original, _maps(randomized, target, pixel_values, classes, batch_size))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, (name, modules) in enumerate(plan, start=1):
            randomize_modules(randomized, modules)
            maps = _maps(randomized, target, pixel_values, classes, batch_size)
            results.append(_entry(i, name, list(modules), original, maps))
    return results


def _entry(step: int, name: str, modules: list[str], original: torch.Tensor, maps: torch.Tensor) -> dict[str, Any]:
    rho = spearman(original, maps).numpy()
    defined = rho[~np.isnan(rho)]
    return {
        "step": step,
        "randomized_up_to": name,
        "modules": modules,
        "spearman_mean": float(defined.mean()) if len(defined) else None,
        "spearman_std": float(defined.std()) if len(defined) else None,
        "n_samples": len(rho),
        "n_undefined": int(len(rho) - len(defined)),
        "n_constant_original": _constant(original),
        "n_constant_randomized": _constant(maps),
    }


def _constant(maps: torch.Tensor) -> int:
    """How many maps are constant (all zero after ReLU and min-max normalisation, typically)."""
    flat = maps.flatten(1)
    return int((flat.max(dim=1).values == flat.min(dim=1).values).sum().item())
