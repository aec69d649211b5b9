"""The gaze-consistency metric over a data set (docs/METHOD.md, section 4), with accuracy and Cohen's kappa.

One pass over the data: each batch's single CAM forward gives the predictions and the maps (of one
method, or of several at once: :func:`scoring_pass`).
For every variant but ``reference``, memory does not grow with the data set: per class the count
``|D_c+|`` (the confusion matrix's diagonal), the map sum and each variant's own sums are enough
(see :class:`~hf_gazecons.variants.ClassSums`). These sums merge by addition, across batches and
across processes.

Example::

    >>> result = gaze_consistency(load_model("hf-hub:org/model"), load_image_dataset("builtin:shapes", "test"))
    >>> result.value, result.accuracy, result.kappa
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .batching import batch_source, check_labels, data_length, eval_mode, unpack_batch
from .cam import CAM, CAMOutput
from .cam_family import DEFAULT_CAM_METHOD
from .consistency_result import ClassConsistency, ConsistencyResult
from .deviation import on_grid
from .errors import MetricError
from .localization import DEFAULT_TOLERANCE, LOCALIZATION_SUMS, Localization, localization_sums
from .models import LoadedModel
from .preprocessing import Preprocessing
from .samples import SampleBatch, SampleRecorder
from .variants import DEFAULT_VARIANT, VARIANTS, ClassSums, Variant, get_variant, is_zero_map

__all__ = [
    "ConsistencyStatistics",
    "REFERENCE_BYTES_PER_PIXEL",
    "gaze_consistency",
    "scoring_options",
    "scoring_pass",
    "cohen_kappa",
]


def cohen_kappa(confusion: torch.Tensor) -> float:
    """Cohen's kappa from a (K, K) confusion matrix (rows: true, columns: predicted)."""
    confusion = confusion.double()
    total = confusion.sum()
    observed = confusion.trace() / total
    expected = (confusion.sum(dim=0) * confusion.sum(dim=1)).sum() / total**2
    if expected >= 1:
        return math.nan
    return float((observed - expected) / (1 - expected))


@dataclass
class ConsistencyStatistics:
    """Running, mergeable statistics of the metric for ``num_classes`` classes.

    Per class: the confusion matrix (its diagonal is ``|D_c+|``), the map sum, the all-zero count
    and each variant's own sums (:class:`~hf_gazecons.variants.ClassSums`); every variant that
    needs only sums is computed beside the one asked for. A variant that ``keeps_maps`` (the
    reference variant's unsquared norm needs the final class mean before any distance) also keeps
    every correct sample's map on the CPU: ``REFERENCE_BYTES_PER_PIXEL * H' * W'`` bytes a map
    (196 B at 7x7: 10 000 maps are 2 MB; 12.5 kB at 56x56: 100 000 maps are 1.25 GB). It refuses
    with a :class:`MetricError` when they would pass ``max_kept_bytes`` (None: half the memory
    available when the statistics are made): at the first batch when ``expected_samples`` (the
    data set's length) is known, else as soon as the kept maps pass it.
    """

    num_classes: int
    variant: str = DEFAULT_VARIANT
    grid: tuple[int, int] | None = None
    max_kept_bytes: int | None = None
    expected_samples: int | None = None
    recorder: SampleRecorder | None = None
    pointing_tolerance: float = DEFAULT_TOLERANCE
    confusion: torch.Tensor = field(init=False)
    map_sum: torch.Tensor | None = field(init=False, default=None)
    terms: dict[str, torch.Tensor] = field(init=False, default_factory=dict)
    localization_sums: torch.Tensor = field(init=False)
    loss_sum: torch.Tensor = field(init=False)
    zero_maps: torch.Tensor = field(init=False)
    kept_maps: list[list[torch.Tensor]] = field(init=False)
    kept_samples: int = field(init=False, default=0)
    variants: dict[str, Variant] = field(init=False)
    keeps_maps: bool = field(init=False)

    def __post_init__(self) -> None:
        asked = get_variant(self.variant)
        self.variants = {
            name: variant
            for name, variant in ((name, get_variant(name)) for name in VARIANTS)
            if not variant.keeps_maps or name == asked.name
        }  # the variant asked for, and every one that sums suffice for
        self.keeps_maps = asked.keeps_maps
        if self.keeps_maps and self.max_kept_bytes is None:
            self.max_kept_bytes = reference_memory_limit()
        k = self.num_classes
        self.confusion = torch.zeros(k, k, dtype=torch.float64)
        self.localization_sums = torch.zeros(k, len(LOCALIZATION_SUMS), dtype=torch.float64)  # per class
        self.loss_sum = torch.zeros((), dtype=torch.float64)  # cross-entropy summed over samples
        self.zero_maps = torch.zeros(k, dtype=torch.float64)  # correct samples whose map is all zero
        self.kept_maps = [[] for _ in range(k)]

    def update(
        self, maps: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None
    ) -> None:
        """Add a batch: (B, H', W') maps of the predicted class, (B, K) logits, (B,) labels."""
        maps, labels = maps.detach().float().cpu(), labels.cpu().long()
        logits = logits.detach().float().cpu()
        predictions = logits.argmax(dim=1)
        self.loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        self.confusion.index_put_((labels, predictions), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
        correct = predictions == labels
        self._add_localization(maps, masks, labels, correct)
        all_grid_maps = on_grid(maps, self.grid)
        if self.recorder is not None:
            self.recorder.update(SampleBatch(maps, all_grid_maps, logits, labels, predictions, masks))
        grid_maps = all_grid_maps[correct].double()
        classes = labels[correct]
        terms = {k: v for variant in self.variants.values() for k, v in variant.sample_terms(grid_maps).items()}
        if self.map_sum is None:
            self.map_sum, self.terms = self._zeros(grid_maps), {key: self._zeros(value) for key, value in terms.items()}
        self.map_sum.index_add_(0, classes, grid_maps)
        for key, value in terms.items():
            self.terms[key].index_add_(0, classes, value)
        self.zero_maps.index_add_(0, classes, is_zero_map(maps[correct]).double())
        if self.keeps_maps:
            self._check_kept_memory(tuple(grid_maps.shape[1:]), len(classes))
            for c in classes.unique().tolist():
                self.kept_maps[c].append(grid_maps[classes == c].float())

    def _zeros(self, samples: torch.Tensor) -> torch.Tensor:
        """Per-class sums of the per-sample ``samples`` (first dim N), all zero."""
        return torch.zeros(self.num_classes, *samples.shape[1:], dtype=torch.float64)

    def _add_localization(
        self, maps: torch.Tensor, masks: torch.Tensor | None, labels: torch.Tensor, correct: torch.Tensor
    ) -> None:
        """Localisation over the correct samples whose mask marks an object (builtin:brain's no_tumour
        has none: there is nothing to point at, and counting it as a miss would dilute the score)."""
        located = correct & masks.cpu().flatten(1).any(dim=1) if masks is not None else None
        if located is not None and located.any():
            self.localization_sums += localization_sums(
                maps[located], masks.cpu()[located], labels[located], self.num_classes, self.pointing_tolerance
            )

    def _check_kept_memory(self, size: tuple[int, int], adding: int) -> None:
        """Refuse a variant that keeps maps before they pass ``max_kept_bytes`` (see the class)."""
        if self.max_kept_bytes is None:
            return
        per_map = REFERENCE_BYTES_PER_PIXEL * size[0] * size[1]
        first, self.kept_samples = self.kept_samples == 0, self.kept_samples + adding
        if first and self.expected_samples and self.expected_samples * per_map > self.max_kept_bytes:
            need = f"{self.expected_samples} samples may need {_bytes_text(self.expected_samples * per_map)}"
        elif self.kept_samples * per_map > self.max_kept_bytes:
            need = f"stopped at {self.kept_samples} kept maps ({_bytes_text(self.kept_samples * per_map)})"
        else:
            return
        raise MetricError(
            f"the {self.variant} variant keeps the {size[0]}x{size[1]} map of every correctly classified sample "
            f"({per_map} bytes each): {need}, more than the {_bytes_text(self.max_kept_bytes)} it may use; "
            f"use the {DEFAULT_VARIANT} variant (--variant {DEFAULT_VARIANT}: constant memory), a coarser --grid, "
            "or fewer samples (--max-samples, --max_eval_samples)"
        )

    def all_reduce(self) -> None:
        """Sum the statistics of every process (``torch.distributed``); a no-op in one process."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        shapes: list[Any] = [None] * dist.get_world_size()
        mine = None if self.map_sum is None else {"map_sum": tuple(self.map_sum.shape)}
        mine = mine and {**mine, **{key: tuple(value.shape) for key, value in self.terms.items()}}
        dist.all_gather_object(shapes, mine)
        known = next((s for s in shapes if s is not None), None)
        if known is not None and self.map_sum is None:  # this rank saw no batch
            self.map_sum = torch.zeros(known.pop("map_sum"), dtype=torch.float64)
            self.terms = {key: torch.zeros(shape, dtype=torch.float64) for key, shape in known.items()}
        device = _collective_device()
        for name in ("confusion", "map_sum", "localization_sums", "loss_sum", "zero_maps"):
            if getattr(self, name) is not None:
                setattr(self, name, _summed(getattr(self, name), device))
        self.terms = {key: _summed(value, device) for key, value in self.terms.items()}
        if self.keeps_maps:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.kept_maps)
            self.kept_maps = [[m for rank in gathered for m in rank[c]] for c in range(self.num_classes)]

    def result(
        self, label_names: list[str], target_name: str, cam_method: str = DEFAULT_CAM_METHOD
    ) -> ConsistencyResult:
        """Finish: per-class values (classes with >= 2 correct samples) and L_CAM (docs/METHOD.md,
        section 4) of the maps of ``cam_method``."""
        counts = self.confusion.diag()
        n_samples = self.confusion.sum(dim=1)
        if self.map_sum is None:
            raise MetricError("no samples were scored: the data is empty")
        class_means = self.map_sum / counts.clamp(min=1)[:, None, None]
        class_means[counts == 0] = math.nan
        valid = counts >= 2
        sums = ClassSums(counts, self.zero_maps, self.map_sum, self.terms, self.kept_maps)
        deviation_sums = {name: variant.deviation_sums(sums) for name, variant in self.variants.items()}
        if self.recorder is not None:
            class_maps = {name: variant.final_class_maps(sums) for name, variant in self.variants.items()}
            self.recorder.finish(label_names, class_maps, counts > 0, valid)

        def class_value(variant: str, c: int) -> float | None:
            return float(deviation_sums[variant][c] / counts[c]) if valid[c] else None

        per_class = {
            name: ClassConsistency(
                class_value(self.variant, c),
                int(counts[c]),
                int(n_samples[c]),
                int(self.zero_maps[c]),
                {v: class_value(v, c) for v in self.variants},
            )
            for c, name in enumerate(label_names)
        }
        values = {
            v: float(deviation_sums[v][valid].sum() / counts[valid].sum()) if valid.any() else None
            for v in self.variants
        }
        value = values[self.variant]
        self._warn_if_unreliable(value, counts)
        localization = Localization.from_class_sums(self.localization_sums, label_names, self.pointing_tolerance)
        total = float(n_samples.sum())
        return ConsistencyResult(
            value=value,
            per_class=per_class,
            accuracy=float(counts.sum() / total),
            kappa=cohen_kappa(self.confusion),
            loss=float(self.loss_sum / total),
            n_samples=int(total),
            n_correct=int(counts.sum()),
            n_zero_maps=int(self.zero_maps.sum()),
            cam_size=tuple(self.map_sum.shape[1:]),
            class_means=class_means.float(),
            target_name=target_name,
            variant=self.variant,
            grid=self.grid,
            localization=localization,
            values=values,
            cam_method=cam_method,
        )

    def _warn_if_unreliable(self, value: float | None, counts: torch.Tensor) -> None:
        """Warn where L_CAM is undefined, or its maps are too small to carry a place."""
        if value is None:
            reason = "no sample was classified correctly" if counts.sum() == 0 else "no class has 2 correct samples"
            warnings.warn(f"gaze consistency is undefined: {reason}", stacklevel=3)
        if self.map_sum[0].numel() < 9:
            warnings.warn(
                f"the maps are only {'x'.join(map(str, self.map_sum.shape[1:]))}: they carry little spatial "
                "information; use a larger input size or an earlier target layer",
                stacklevel=3,
            )


def gaze_consistency(
    model: nn.Module | LoadedModel,
    data: Iterable[Any],
    *,
    preprocessing: Preprocessing | None = None,
    variant: str = DEFAULT_VARIANT,
    grid: tuple[int, int] | None = None,
    target: str | int | None = None,
    batch_size: int = 32,
    label_names: list[str] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    max_kept_bytes: int | None = None,
    dtype: torch.dtype | None = None,
    pointing_tolerance: float = DEFAULT_TOLERANCE,
    samples: SampleRecorder | None = None,
    cam_method: str = DEFAULT_CAM_METHOD,
) -> ConsistencyResult:
    """Score ``model``'s gaze consistency, accuracy and kappa on ``data`` in one pass.

    ``data`` is an iterable of ``(pixel_values, labels)`` pairs or of dicts with ``pixel_values``,
    ``labels`` (and optionally ``masks``) — a torch DataLoader works — or a ``datasets.Dataset``
    or a streamed ``datasets.IterableDataset`` with ``image``/``label`` columns together with
    ``preprocessing`` (implied by a :class:`LoadedModel`). Under several processes (``accelerate
    launch``, ``torchrun``) a ``datasets`` data set is split by rank, any other iterable must
    already be the process's own shard; the result is merged and the same on every rank.
    ``dtype`` (``torch.bfloat16`` or ``torch.float16``) runs the forward under autocast; the maps
    and statistics stay float32/64.

    Memory does not depend on the data set's length, except for ``variant="reference"``, which
    keeps every correct sample's map and refuses beyond ``max_kept_bytes`` (see
    :class:`ConsistencyStatistics`).

    Args:
        model: a :class:`LoadedModel` (brings its preprocessing and label names) or any classifier
            module whose output (or ``.logits``) are the class logits.
        data: batches, or a ``datasets`` data set (then ``preprocessing`` is needed).
        variant: the deviation L_CAM reports (``paper``, ``reference``, ``robust`` or ``pearson``);
            all but ``reference`` are always computed (``result.values``).
        grid: resample every map to this ``(H, W)`` by averaging areas, to compare backbones.
        target: the maps' target layer: a module name, a timm stage index, or None (automatic).
        label_names: the class names in logit order (default: the LoadedModel's, else "0", "1", ...).
        dtype: autocast dtype of the forward (None: full precision).
        pointing_tolerance: the pointing game's tolerance in pixels (see :mod:`~hf_gazecons.localization`).
        samples: a :class:`~hf_gazecons.samples.SampleRecorder` that collects the per-image table
            (its ``table`` once this returns).
        cam_method: the saliency method of the maps (:func:`~hf_gazecons.cam_family.cam_methods`,
            docs/METHOD.md, section 12); Score-CAM's masked forwards come in batches of ``batch_size``.

    Returns:
        :class:`~hf_gazecons.consistency_result.ConsistencyResult`: L_CAM (``value``, None when no
        class has 2 correct samples), per class, accuracy, kappa, zero-map count, class means,
        localisation where the data has masks.

    Raises:
        DataError: an empty data set, or a label outside the model's classes.
        MetricError: label names that do not match the model's outputs, or the reference variant's
            maps would not fit in ``max_kept_bytes``.
        TargetLayerError: the target layer yields no spatial map.

    Example:
        >>> result = gaze_consistency(load_model("out/run"), load_image_dataset("builtin:shapes", "test"))
        >>> result.value, result.accuracy, result.zero_map_share
    """
    options = {name: value for name, value in locals().items() if name not in ("model", "data", "cam_method")}
    return scoring_pass(model, data, [cam_method], **options)[cam_method]


def scoring_options(**options: Any) -> dict[str, Any]:
    """:func:`gaze_consistency`'s keyword arguments (but ``cam_method``), its defaults filled in.

    Raises:
        TypeError: an argument that :func:`gaze_consistency` does not take.
    """
    parameters = inspect.signature(gaze_consistency).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "cam_method"}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}; the scoring options are {sorted(defaults)}")
    return {**defaults, **options}


def scoring_pass(
    model: nn.Module | LoadedModel,
    data: Iterable[Any],
    cam_methods: Sequence[str],
    *,
    on_batch: Callable[[dict[str, CAMOutput], torch.Tensor], None] | None = None,
    **options: Any,
) -> dict[str, ConsistencyResult]:
    """:func:`gaze_consistency` under each of ``cam_methods`` in ONE pass over ``data``: per batch one
    forward (and one gradient) serves every method (:meth:`~hf_gazecons.cam.CAM.maps`); they share
    the predictions. ``on_batch(outputs, labels)`` sees each batch's maps (per method). ``options``
    are :func:`gaze_consistency`'s keyword arguments (see :func:`scoring_options`)."""
    settings = scoring_options(**options)
    preprocessing, label_names, batch_size = settings["preprocessing"], settings["label_names"], settings["batch_size"]
    variant, grid, max_kept_bytes, dtype = (settings[k] for k in ("variant", "grid", "max_kept_bytes", "dtype"))
    if isinstance(model, LoadedModel):
        preprocessing = preprocessing or model.preprocessing
        label_names = label_names or model.label_names
        model = model.model
    cam = CAM(model, target=settings["target"], method=cam_methods[0], masked_batch_size=batch_size)
    device = next(model.parameters()).device
    expected = data_length(data)
    workers = settings["num_workers"]
    batches = batch_source(data, preprocessing, batch_size, workers, pin_memory=device.type == "cuda")
    statistics: dict[str, ConsistencyStatistics] = {}
    rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    with eval_mode(model):
        bar = None if settings["progress"] and rank0 else True  # None: a bar on terminals, none in logs and pipes
        for batch in tqdm(batches, desc="gaze consistency", unit="batch", disable=bar):
            pixel_values, labels, masks = unpack_batch(batch)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype not in (None, torch.float32)):
                outputs = cam.maps(pixel_values.to(device, non_blocking=True), methods=cam_methods)
            num_classes = outputs[cam_methods[0]].logits.shape[1]
            check_labels(labels, num_classes)
            for method, out in outputs.items():
                if method not in statistics:
                    recorder = settings["samples"] if method == cam_methods[0] else None
                    statistics[method] = ConsistencyStatistics(
                        num_classes, variant, grid, max_kept_bytes, expected, recorder, settings["pointing_tolerance"]
                    )
                statistics[method].update(out.maps, out.logits, labels, masks)
            if on_batch is not None:
                on_batch(outputs, labels)
    results = {}
    for method in cam_methods:
        kept = statistics.get(method) or ConsistencyStatistics(len(label_names or []) or 1, variant, grid)
        kept.all_reduce()
        names = list(label_names) if label_names else [str(i) for i in range(kept.num_classes)]
        if len(names) != kept.num_classes:
            raise MetricError(f"{len(names)} label names for a model with {kept.num_classes} outputs")
        results[method] = kept.result(names, cam.target_name, method)
    return results


REFERENCE_BYTES_PER_PIXEL = 4
"""Bytes the reference variant keeps per pixel of each correct sample's map (float32)."""


def reference_memory_limit() -> int | None:
    """Half the memory available now (``MemAvailable`` of /proc/meminfo, else the free physical
    pages), the default limit of the reference variant's kept maps; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return None


def _bytes_text(n_bytes: int) -> str:
    """``288 B``, ``12.5 KiB``, ``1,192.1 MiB``."""
    if n_bytes < 2**10:
        return f"{n_bytes} B"
    return f"{n_bytes / 2**10:,.1f} KiB" if n_bytes < 2**20 else f"{n_bytes / 2**20:,.1f} MiB"


def _summed(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` summed over every process (on ``device`` for the collective), back on the CPU."""
    reduced = tensor.to(device)
    dist.all_reduce(reduced)
    return reduced.cpu()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
