"""Every picture hf_gazecons writes (matplotlib, PNG): class-mean maps, overlays, curves, kappa vs L_CAM.

Each function takes plain data (tensors, lists of dicts) and a path, writes one PNG and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from .cam import resize_maps  # noqa: E402
from .run_record import CONSISTENCY, history_key, metric_key  # noqa: E402
from .stats import pearson_r  # noqa: E402

__all__ = [
    "class_means_figure",
    "learning_curves_figure",
    "plot_class_means",
    "plot_overlays",
    "plot_learning_curves",
    "plot_kappa_vs_consistency",
    "overlay_image",
]


MAX_COLUMNS = 8
"""Class panels per line of ``class_means.png``; more classes wrap into further lines."""
CLASS_MEANS_CMAP = "jet"


def plot_class_means(
    rows: Mapping[str, torch.Tensor],
    label_names: Sequence[str],
    path: str | Path,
    title: str = "Class-mean Grad-CAM (representative gaze)",
) -> Path:
    """Each entry of ``rows`` (name -> (K, H', W') class means) as panels of its classes; see
    :func:`class_means_figure`."""
    return _save(class_means_figure(rows, label_names, title), path)


def class_means_figure(
    rows: Mapping[str, torch.Tensor],
    label_names: Sequence[str],
    title: str = "Class-mean Grad-CAM (representative gaze)",
) -> plt.Figure:
    """One panel per class and entry, at most :data:`MAX_COLUMNS` to a line (more classes wrap into
    further lines), one colour bar for all; a class without correct samples (an all-NaN mean) is
    marked n/a instead of drawn."""
    k = len(label_names)
    columns = max(1, min(k, MAX_COLUMNS))
    lines = math.ceil(k / columns)
    fig, axes = plt.subplots(
        len(rows) * lines,
        columns,
        figsize=(2.0 * columns + 1.0, 2.1 * len(rows) * lines + 0.5),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat:
        ax.axis("off")
    for r, (row_name, means) in enumerate(rows.items()):
        for c, label in enumerate(label_names):
            ax = axes[r * lines + c // columns][c % columns]
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(label), fontsize=9)
            mean = means[c].float()
            if torch.isnan(mean).all():
                ax.set_facecolor("0.92")
                ax.text(0.5, 0.5, "n/a\n(no correct\nsample)", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(mean.numpy(), cmap=CLASS_MEANS_CMAP, vmin=0, vmax=1, interpolation="bilinear")
            if c % columns == 0 and len(rows) > 1:
                ax.set_ylabel(row_name, fontsize=8)
    mappable = ScalarMappable(Normalize(0, 1), CLASS_MEANS_CMAP)
    fig.colorbar(mappable, ax=axes, shrink=0.8, label="normalised Grad-CAM")
    fig.suptitle(title, fontsize=11)
    return fig


def plot_overlays(
    images: Sequence[Image.Image],
    maps: torch.Tensor,
    titles: Sequence[str],
    path: str | Path,
    columns: int = 4,
) -> Path:
    """Each image with its (upsampled) map over it, titled (e.g. true label, prediction and score)."""
    n = len(images)
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, title) in enumerate(zip(images, titles)):
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        heat = resize_maps(maps[i : i + 1].float(), rgb.shape[:2])[0].numpy()
        ax = axes.flat[i]
        ax.imshow(rgb)
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
    return _save(fig, path)


def overlay_image(image: Image.Image, heat: torch.Tensor, size: int | None = None, alpha: float = 0.45) -> Image.Image:
    """``image`` (resized so that its longer side is ``size``, if given) with the (H', W') map
    ``heat`` (values in [0, 1]) upsampled over it in the ``jet`` colours of :func:`plot_overlays`."""
    image = image.convert("RGB")
    if size is not None:
        scale = size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    upsampled = resize_maps(heat[None].float(), (image.height, image.width))[0].clamp(0, 1).numpy()
    colours = matplotlib.colormaps["jet"](upsampled)[..., :3]
    rgb = np.asarray(image, dtype=np.float32) / 255
    blended = (1 - alpha) * rgb + alpha * colours
    return Image.fromarray(np.round(blended * 255).clip(0, 255).astype(np.uint8), "RGB")


def plot_learning_curves(history: Sequence[Mapping[str, float | None]], path: str | Path, title: str = "") -> Path:
    """Per epoch: losses, accuracy and kappa, L_CAM, lambda and the penalty; see :func:`learning_curves_figure`."""
    return _save(learning_curves_figure(history, title), path)


def learning_curves_figure(history: Sequence[Mapping[str, float | None]], title: str = "") -> plt.Figure:
    """Per epoch (keys as in ``results.json``): the training loss (cross-entropy + lambda x penalty)
    beside its cross-entropy and the validation cross-entropy; accuracy and kappa; L_CAM; lambda
    with the penalty on an axis of its own (their scales differ by orders of magnitude)."""
    epochs = [h["epoch"] for h in history]

    def values(key: str) -> list[float]:
        return [np.nan if h.get(key) is None else h[key] for h in history]

    panels = [
        ("loss", [history_key("loss"), history_key("cross_entropy"), metric_key("eval", "loss")]),
        ("accuracy / kappa", [metric_key("eval", "accuracy"), metric_key("eval", "kappa")]),
        ("gaze consistency L_CAM (lower = more consistent)", [metric_key("eval", CONSISTENCY)]),
        ("lambda (left) and penalty (right)", [history_key("lambda")]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (name, keys) in zip(axes, panels):
        for key in keys:
            ax.plot(epochs, values(key), marker="o", label=key)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    penalty_axis = axes[-1].twinx()
    penalty = history_key("penalty")
    penalty_axis.plot(epochs, values(penalty), marker="s", color="tab:red", label=penalty)
    penalty_axis.set_ylabel("penalty", color="tab:red")
    lines = axes[-1].get_lines() + penalty_axis.get_lines()
    axes[-1].legend(lines, [line.get_label() for line in lines], fontsize=7)
    for ax in axes[:-1]:
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return fig


def plot_kappa_vs_consistency(history: Sequence[Mapping[str, float | None]], path: str | Path, title: str = "") -> Path:
    """Cohen's kappa against L_CAM over epochs, with Pearson r (the study's Table 2 statistic)."""
    kappa = [h.get(metric_key("eval", "kappa")) for h in history]
    consistency = [h.get(metric_key("eval", CONSISTENCY)) for h in history]
    r = pearson_r(kappa, consistency)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    points = ax.scatter(
        [np.nan if v is None else v for v in consistency],
        [np.nan if v is None else v for v in kappa],
        c=[h["epoch"] for h in history],
        cmap="viridis",
    )
    fig.colorbar(points, ax=ax, label="epoch")
    ax.set_xlabel("L_CAM (gaze consistency)")
    ax.set_ylabel("Cohen's kappa")
    ax.set_title(f"{title}  Pearson r = {'n/a' if r is None else f'{r:.3f}'}".strip(), fontsize=10)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# sweeps (``hf-gazecons sweep``): rows as in ``runs.csv``
# ---------------------------------------------------------------------------------------------
__all__ += ["plot_sweep_curves", "plot_sweep_finals"]

_SWEEP_PANELS = (
    ("accuracy", "accuracy"),
    ("kappa", "Cohen's kappa"),
    (CONSISTENCY, "L_CAM (lower = more consistent)"),
)


def _sweep_value(value: float | str | None) -> float:
    if value is None or value == "":
        return np.nan
    return float(value)


def plot_sweep_curves(rows: Sequence[Mapping[str, float | str | None]], path: str | Path, title: str = "") -> Path:
    """Learning curves of one backbone: accuracy, kappa and L_CAM against epoch, one colour per lambda.

    ``rows`` are ``runs.csv`` rows (``lambda``, ``seed``, ``epoch`` and the metric columns); the
    line is the mean over seeds, the band spans the seeds' minimum to maximum.
    """
    lambdas = sorted({float(r["lambda"]) for r in rows})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(lambdas), 2)))
    fig, axes = plt.subplots(1, len(_SWEEP_PANELS), figsize=(4.3 * len(_SWEEP_PANELS), 3.5))
    for colour, lam in zip(colours, lambdas):
        mine = [r for r in rows if float(r["lambda"]) == lam]
        epochs = sorted({float(r["epoch"]) for r in mine})
        seeds = sorted({r["seed"] for r in mine})
        for ax, (key, name) in zip(axes, _SWEEP_PANELS):
            table = np.full((len(seeds), len(epochs)), np.nan)
            for r in mine:
                table[seeds.index(r["seed"]), epochs.index(float(r["epoch"]))] = _sweep_value(r.get(key))
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs
                mean, low, high = np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)
            ax.plot(epochs, mean, marker="o", markersize=3, color=colour, label=f"λ={lam:g} (n={len(seeds)})")
            if len(seeds) > 1:
                ax.fill_between(epochs, low, high, color=colour, alpha=0.18, linewidth=0)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("epoch")
    for ax in axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}  (mean over seeds, band: min-max)".strip(), fontsize=10)
    return _save(fig, path)


def plot_sweep_finals(finals: Sequence[Mapping[str, float | str | None]], path: str | Path, title: str = "") -> Path:
    """Final (last epoch) L_CAM, accuracy and kappa against lambda: one line per backbone, error bars
    = standard deviation over seeds. ``finals`` are :func:`~hf_gazecons.sweep.tables.final_rows`;
    lambdas are placed evenly (their labels give the values)."""
    by_setting = {(str(f["backbone"]), float(f["lambda"])): f for f in finals}
    backbones = list(dict.fromkeys(backbone for backbone, _ in by_setting))
    lambdas = sorted({lam for _, lam in by_setting})
    panels = ((CONSISTENCY, "final L_CAM"), ("accuracy", "final accuracy"), ("kappa", "final kappa"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.5))
    offsets = np.linspace(-0.08, 0.08, len(backbones)) if len(backbones) > 1 else [0.0]
    for offset, backbone in zip(offsets, backbones):
        for ax, (key, name) in zip(axes, panels):
            found = [by_setting.get((backbone, lam), {}) for lam in lambdas]
            means = [_sweep_value(f.get(f"{key}_mean")) for f in found]
            stds = [f.get(f"{key}_std") or 0.0 for f in found]  # one seed: no spread
            ax.errorbar(np.arange(len(lambdas)) + offset, means, yerr=stds, marker="o", capsize=3, label=backbone)
            ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_xticks(range(len(lambdas)))
        ax.set_xticklabels([f"{lam:g}" for lam in lambdas])
        ax.set_xlabel("lambda_max")
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "final evaluation against lambda_max (error bars: std over seeds)", fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# data sets with masks (builtin:shapes, builtin:brain)
# ---------------------------------------------------------------------------------------------
__all__ += ["plot_masked_samples"]


def plot_masked_samples(
    rows: Mapping[str, Sequence[tuple[Image.Image, Image.Image]]], path: str | Path, title: str = ""
) -> Path:
    """A grid of samples, one row per entry of ``rows`` (name -> (image, mask) pairs), each image with
    its mask's outline (nonzero = object) drawn over it in red."""
    columns = max(len(pairs) for pairs in rows.values())
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.9 * columns, 2.0 * len(rows) + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for r, (name, pairs) in enumerate(rows.items()):
        axes[r][0].set_ylabel(name, fontsize=10)
        for c, (image, mask) in enumerate(pairs):
            ax = axes[r][c]
            ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            outline = np.asarray(mask.convert("L")) > 0
            if outline.any():
                ax.contour(outline, levels=[0.5], colors="red", linewidths=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)
