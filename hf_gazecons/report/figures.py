"""The report's pictures as ``data:`` URIs: files of an output folder, and figures drawn for the page."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["MAX_PANELS", "data_uri", "deviation_histograms", "figure_uri", "file_uri"]

MAX_PANELS = 40
"""Classes drawn in the histogram figure (the first ones in class order)."""

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_uri(path: str | Path) -> str | None:
    """The picture at ``path`` as a data URI; None if there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    return data_uri(path.read_bytes(), _MIME[path.suffix.lower()])


def figure_uri(fig: plt.Figure, dpi: int = 80) -> str:
    """A matplotlib figure as a PNG data URI (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return data_uri(buffer.getvalue(), "image/png")


def deviation_histograms(frame: pd.DataFrame, column: str, classes: Sequence[str]) -> str | None:
    """Per compared class, a histogram of ``column`` over the rows that count in L_CAM, with the
    misclassified rows (compared with the class they were taken for) stacked on top; one PNG."""
    classes = list(classes)[:MAX_PANELS]
    values = frame[frame[column].notna()]
    if values.empty or not classes:
        return None
    columns = min(len(classes), 4)
    lines = math.ceil(len(classes) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.3 * lines), squeeze=False, layout="constrained")
    bins = np.histogram_bin_edges(values[column].to_numpy(dtype=float), bins=20)
    for ax in axes.flat[len(classes) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, classes):
        mine = values[values["compared_class"] == name]
        counted = mine[mine["in_l_cam"]][column].to_numpy(dtype=float)
        other = mine[~mine["in_l_cam"]][column].to_numpy(dtype=float)
        colours, labels = ["tab:blue", "tab:orange"], ["in L_CAM", "other"]
        ax.hist([counted, other], bins=bins, stacked=True, color=colours, label=labels)
        ax.set_title(f"{name} (n={len(counted)})", fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel(f"{column} (higher = less consistent)", fontsize=9)
    return figure_uri(fig)
