"""Each class's most and least consistent images, as overlays: what the report shows per class.

From the per-image table, per compared class, the rows that count in L_CAM with the lowest
deviation (most consistent: closest to the class map) and the highest (least consistent). Their
images are read back from the scored data (by their position in the table), explained once more
(one Grad-CAM forward of those images) and written as small JPEG overlays into ``examples/``,
listed in ``examples/examples.json``.

>>> write_extremes(loaded, dataset, table, "out")      # out/examples/examples.json, out/examples/*.jpg
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from PIL import Image

from .cam_family import DEFAULT_CAM_METHOD
from .data.torch_dataset import decode_image
from .explain import explain
from .filenames import EXAMPLES_DIR
from .jsonio import write_json
from .models import LoadedModel
from .plots import overlay_image

__all__ = ["EXAMPLES_FILE", "extreme_rows", "images_at", "write_extremes"]

EXAMPLES_FILE = "examples.json"
THUMBNAIL = 128
"""The longer side of an overlay, in pixels."""


def extreme_rows(
    table: pa.Table, per_class: int = 3, column: str = "deviation_paper", max_classes: int = 40
) -> list[dict[str, Any]]:
    """Per compared class (the first ``max_classes`` in class order), the ``per_class`` rows that
    count in L_CAM with the lowest ``column`` (``kind="most"``) and the highest (``"least"``), most
    extreme first; each row with its ``position`` in the table. A class with fewer rows than
    ``2 * per_class`` shows each row once."""
    wanted = ("index", "label", "prediction", "probability", column, "in_l_cam", "compared_class")
    frame = table.select([c for c in wanted if c in table.column_names]).to_pandas()
    frame["position"] = range(len(frame))
    counted = frame[frame["in_l_cam"]]
    chosen = []
    for name in sorted(counted["compared_class"].unique())[:max_classes]:
        ranked = counted[counted["compared_class"] == name].sort_values([column, "position"])
        most = ranked.head(per_class)
        least = ranked.drop(most.index).tail(per_class).iloc[::-1]
        for kind, rows in (("most", most), ("least", least)):
            for rank, (_, row) in enumerate(rows.iterrows(), start=1):
                chosen.append(
                    {
                        "class": name,
                        "kind": kind,
                        "rank": rank,
                        "position": int(row["position"]),
                        "index": int(row["index"]),
                        "deviation": float(row[column]),
                        "label": row["label"],
                        "prediction": row["prediction"],
                        "probability": float(row["probability"]),
                    }
                )
    return chosen


def images_at(dataset: datasets.Dataset | datasets.IterableDataset, positions: Sequence[int]) -> list[Image.Image]:
    """The images at ``positions`` (rows in scoring order), in that order; a stream is read once,
    up to the last of them."""
    if isinstance(dataset, datasets.Dataset):
        return list(dataset.select(positions)["image"])
    wanted, found = set(positions), {}
    for position, row in enumerate(dataset.cast_column("image", datasets.Image(decode=False))):
        if position in wanted:
            found[position] = decode_image(row["image"])
            if len(found) == len(wanted):
                break
    return [found[p] for p in positions]


def write_extremes(
    loaded: LoadedModel,
    dataset: datasets.Dataset | datasets.IterableDataset,
    table: pa.Table,
    directory: str | Path,
    target: str | int | None = None,
    per_class: int = 3,
    cam_method: str = DEFAULT_CAM_METHOD,
) -> Path:
    """Write the overlays of :func:`extreme_rows` (maps of ``cam_method``, the method the table was
    scored with) and ``examples.json`` into ``directory/examples``."""
    folder = Path(directory) / EXAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    chosen = extreme_rows(table, per_class)
    if chosen:
        images = images_at(dataset, [row["position"] for row in chosen])
        explained = explain(loaded, images, target, cam_method=cam_method)
        for i, row in enumerate(chosen):
            row["file"] = f"{i:04d}.jpg"
            overlay_image(images[i], explained.maps[i], THUMBNAIL).save(folder / row["file"], quality=85)
    return write_json(folder / EXAMPLES_FILE, chosen)
