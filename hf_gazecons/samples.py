"""The per-image table (``samples.parquet``): one row per scored image, columns from a registry.

:class:`SampleRecorder` rides along :func:`~hf_gazecons.metric.gaze_consistency` (it is called from
the statistics' update): each batch adds its rows, and the end of the pass adds the columns that
need the final class maps (the deviations). A column is a :class:`SampleColumn` in
:data:`SAMPLE_COLUMNS`; :func:`register_column` adds one (computed per batch from a
:class:`SampleBatch`, or at the end from a :class:`SampleChunk`), and a column that a run cannot
compute (localisation without masks, the reference variant when it was not asked for) is left out.

Per-image deviations need the final class map, known only after the last batch. To get them
exactly without keeping maps in memory, each image's map at the metric's grid goes to an
anonymous temporary file as it is scored (``4 * H' * W'`` bytes an image: 196 B at 7x7, 64 B at
4x4; the file lives in ``TMPDIR`` and is gone when the pass ends, also on a crash) and is read
back once, in chunks, at the end. The rows themselves are kept in memory (about 80 bytes an image
plus the class names). Deviations are defined for every row whose compared class (the predicted
one: the map is the predicted class's) has a class map; ``in_l_cam`` marks the rows that L_CAM
averages (correct, and their class has at least 2 correct images), so the mean of those rows is
L_CAM and the mean per class is the class's value (docs/METHOD.md, section 14).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .errors import MetricError, UsageError
from .filenames import SAMPLES_FORMATS
from .localization import energy_pointing_game, pointing_game
from .variants import VARIANTS, get_variant, is_zero_map

__all__ = [
    "SAMPLES_FORMATS",
    "SAMPLE_COLUMNS",
    "SampleBatch",
    "SampleChunk",
    "SampleColumn",
    "SampleRecorder",
    "read_samples",
    "register_column",
    "samples_path",
    "with_run_columns",
    "write_samples",
]


@dataclass
class SampleBatch:
    """What one batch gives the per-batch columns: (B, H', W') maps of the predicted class, the same
    at the metric's grid, (B, K) logits, (B,) labels and predictions, (B, H, W) masks or None."""

    maps: torch.Tensor
    grid_maps: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    predictions: torch.Tensor
    masks: torch.Tensor | None


@dataclass
class SampleChunk:
    """What the end-of-pass columns see, for a chunk of rows: their maps at the grid (float64),
    compared class and correctness, and per class the class map of each variant computed
    (``class_maps[variant]``: (K, H', W')), whether it is defined, and whether the class counts in
    L_CAM (>= 2 correct images)."""

    grid_maps: torch.Tensor
    compared: torch.Tensor
    correct: torch.Tensor
    class_maps: Mapping[str, torch.Tensor]
    defined: torch.Tensor
    valid: torch.Tensor


@dataclass(frozen=True)
class SampleColumn:
    """One column of the table: its name, arrow type, a one-line description (stored in the
    parquet schema), and how it is computed: per batch (``stage="batch"``, from a
    :class:`SampleBatch`) or at the end (``stage="end"``, from a :class:`SampleChunk`). ``compute``
    returns one value per row (None where the run cannot compute the column). ``classes=True``:
    the values are class indices, written as class names."""

    name: str
    type: pa.DataType
    doc: str
    compute: Callable[[Any], Any]
    stage: Literal["batch", "end"] = "batch"
    classes: bool = False


SAMPLE_COLUMNS: dict[str, SampleColumn] = {}
"""The registry, in table order (after ``index``, and the data set's ``id``/``planted`` columns)."""


def register_column(column: SampleColumn) -> SampleColumn:
    """Add ``column`` to :data:`SAMPLE_COLUMNS` (a new name; replacing one is an error)."""
    if column.name in SAMPLE_COLUMNS or column.name == "index":
        raise UsageError(f"a per-image column named {column.name!r} is already registered")
    SAMPLE_COLUMNS[column.name] = column
    return column


def _located(batch: SampleBatch) -> torch.Tensor | None:
    """Rows whose mask marks an object (None without masks)."""
    return None if batch.masks is None else batch.masks.flatten(1).any(dim=1)


def _localisation(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[SampleBatch], Any]:
    def compute(batch: SampleBatch) -> pa.Array | None:
        located = _located(batch)
        if located is None:
            return None
        values = np.zeros(len(located))
        if located.any():
            values[located.numpy()] = score(batch.maps[located], batch.masks[located]).double().numpy()
        return pa.array(values, mask=~located.numpy())

    return compute


def _deviation(variant: str) -> Callable[[SampleChunk], Any]:
    def compute(chunk: SampleChunk) -> pa.Array | None:
        if variant not in chunk.class_maps:
            return None
        class_maps = chunk.class_maps[variant].double()[chunk.compared]
        values = get_variant(variant).deviation(chunk.grid_maps, class_maps).numpy()
        defined = chunk.defined[chunk.compared].numpy()
        return pa.array(np.where(defined, values, 0.0), mask=~defined)

    return compute


for _column in (
    SampleColumn("label", pa.string(), "true class", lambda b: b.labels.numpy(), classes=True),
    SampleColumn("prediction", pa.string(), "predicted class", lambda b: b.predictions.numpy(), classes=True),
    SampleColumn("correct", pa.bool_(), "prediction == label", lambda b: (b.predictions == b.labels).numpy()),
    SampleColumn(
        "compared_class",
        pa.string(),
        "the class whose Grad-CAM map is taken and compared with that class's map (the predicted class)",
        lambda b: b.predictions.numpy(),
        classes=True,
    ),
    SampleColumn(
        "probability",
        pa.float64(),
        "softmax probability of the predicted class",
        lambda b: b.logits.double().softmax(dim=1).amax(dim=1).numpy(),
    ),
    SampleColumn(
        "cross_entropy",
        pa.float64(),
        "cross-entropy of the true class (the loss)",
        lambda b: F.cross_entropy(b.logits.double(), b.labels, reduction="none").numpy(),
    ),
    SampleColumn("zero_map", pa.bool_(), "the map is zero everywhere", lambda b: is_zero_map(b.maps).numpy()),
    *(
        SampleColumn(
            f"deviation_{variant}",
            pa.float64(),
            f"l(x, c) of the {variant} variant against the compared class's final map (null: that class has "
            "no correct image)",
            _deviation(variant),
            stage="end",
        )
        for variant in VARIANTS
    ),
    SampleColumn(
        "in_l_cam",
        pa.bool_(),
        "the row counts in L_CAM: correct, and its class has at least 2 correct images",
        lambda c: (c.correct & c.valid[c.compared]).numpy(),
        stage="end",
    ),
    SampleColumn(
        "energy_pointing_game",
        pa.float64(),
        "share of the map's mass inside the mask; 0 for an all-zero map, which the aggregate leaves out "
        "(null: no mask, or the mask marks no object)",
        _localisation(energy_pointing_game),
    ),
    SampleColumn(
        "pointing_game",
        pa.bool_(),
        "the map's peak (the centre of its maximal cells, docs/METHOD.md section 10) lies inside the mask, "
        "tolerance 0 (null: no mask, or the mask marks no object)",
        _localisation(lambda maps, masks: pointing_game(maps, masks).double()),
    ),
):
    register_column(_column)


class SampleRecorder:
    """Collects the table during one scoring pass (see the module docstring).

    ``update`` adds a batch; ``finish`` (called by the statistics' ``result``, after the statistics
    of all processes are merged) adds the end columns and, under several processes, gathers every
    process's rows (rank 0's first: the shards are contiguous). ``table`` is then the result, rows in
    scoring order, ``index`` the row's position in it.

    >>> recorder = SampleRecorder()
    >>> result = gaze_consistency(loaded, dataset, samples=recorder)
    >>> recorder.table.to_pandas().sort_values("deviation_paper").tail()
    """

    def __init__(self, chunk_rows: int = 4096) -> None:
        self.chunk_rows = chunk_rows
        self.table: pa.Table | None = None
        self._batches: list[dict[str, Any]] = []
        self._compared: list[torch.Tensor] = []
        self._correct: list[torch.Tensor] = []
        self._maps = tempfile.TemporaryFile(prefix="hf_gazecons-maps-")
        self._map_shape: tuple[int, ...] | None = None
        self.rows = 0

    def update(self, batch: SampleBatch) -> None:
        """Add one batch's rows and write its grid maps to the temporary file."""
        if self.table is not None:
            raise MetricError("this SampleRecorder has finished: use a new one for another pass")
        if batch.masks is not None:  # a loader of the caller's may hand them over on the model's device
            batch = replace(batch, masks=batch.masks.cpu())
        grid = batch.grid_maps.detach().float().cpu().contiguous()
        if self._map_shape is None:
            self._map_shape = tuple(grid.shape[1:])
        data = grid.numpy().tobytes()
        self._check_disk(len(data))
        self._maps.write(data)
        values = {}
        for column in SAMPLE_COLUMNS.values():
            if column.stage == "batch":
                values[column.name] = column.compute(batch)
        self._batches.append(values)
        self._compared.append(batch.predictions.cpu())
        self._correct.append((batch.predictions == batch.labels).cpu())
        self.rows += len(batch.labels)

    def _check_disk(self, adding: int) -> None:
        free = shutil.disk_usage(tempfile.gettempdir()).free
        if free < 2 * adding:
            raise MetricError(
                f"the per-image table keeps each image's {'x'.join(map(str, self._map_shape or ()))} map in a "
                f"temporary file until the pass ends, and {tempfile.gettempdir()} has {free:,} bytes left; point "
                "TMPDIR at a larger disk, use a coarser --grid, or --samples-format none"
            )

    def finish(
        self,
        label_names: Sequence[str],
        class_maps: Mapping[str, torch.Tensor],
        defined: torch.Tensor,
        valid: torch.Tensor,
    ) -> pa.Table:
        """Compute the end columns against the final ``class_maps`` (variant -> (K, H', W')), build
        the table (class indices as ``label_names``) and gather it from every process."""
        names = np.asarray(list(label_names), dtype=object)
        batch_values = {
            name: [b[name] for b in self._batches] for name, column in SAMPLE_COLUMNS.items() if column.stage == "batch"
        }
        end_values = self._end_columns(class_maps, defined.cpu(), valid.cpu())
        self._maps.close()
        columns: dict[str, pa.Array] = {"index": pa.array(np.arange(self.rows, dtype=np.int64))}
        fields = [pa.field("index", pa.int64(), metadata={"doc": "position of the image in the scored data"})]
        for name, column in SAMPLE_COLUMNS.items():
            parts = batch_values[name] if column.stage == "batch" else end_values[name]
            array = _concat(parts, column, names)
            if array is not None:
                columns[name] = array
                fields.append(pa.field(name, column.type, metadata={"doc": column.doc}))
        table = pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))
        self.table = _gathered(table)
        self._batches, self._compared, self._correct = [], [], []
        return self.table

    def _end_columns(
        self, class_maps: Mapping[str, torch.Tensor], defined: torch.Tensor, valid: torch.Tensor
    ) -> dict[str, list[Any]]:
        """The end columns, chunk by chunk over the maps in the temporary file."""
        ends = [c for c in SAMPLE_COLUMNS.values() if c.stage == "end"]
        values: dict[str, list[Any]] = {c.name: [] for c in ends}
        if not self.rows:
            return values
        compared, correct = torch.cat(self._compared), torch.cat(self._correct)
        shape = self._map_shape or ()
        per_map = int(np.prod(shape))
        self._maps.seek(0)
        for start in range(0, self.rows, self.chunk_rows):
            stop = min(start + self.chunk_rows, self.rows)
            raw = self._maps.read((stop - start) * per_map * 4)
            maps = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).reshape(stop - start, *shape).copy())
            chunk = SampleChunk(maps.double(), compared[start:stop], correct[start:stop], class_maps, defined, valid)
            for column in ends:
                values[column.name].append(column.compute(chunk))
        return values


def _concat(parts: list[Any], column: SampleColumn, names: np.ndarray) -> pa.Array | None:
    """One column from its per-batch (or per-chunk) parts; None when no part has values."""
    if not parts or all(part is None for part in parts):
        return None
    arrays = []
    for part in parts:
        if part is None:
            raise MetricError(f"the per-image column {column.name!r} has values for some batches only")
        if column.classes:
            part = names[np.asarray(part)]
        arrays.append(pa.array(part, type=column.type) if not isinstance(part, pa.Array) else part.cast(column.type))
    return pa.concat_arrays(arrays)


def _gathered(table: pa.Table) -> pa.Table:
    """Every process's rows, rank 0's first, ``index`` renumbered; the table itself in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return table
    tables: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(tables, table)
    merged = pa.concat_tables(tables)
    return merged.set_column(0, merged.schema.field("index"), pa.array(np.arange(merged.num_rows, dtype=np.int64)))


def with_run_columns(
    table: pa.Table, cam_method: str, per_image: Mapping[str, tuple[Sequence[float | None], str]] | None = None
) -> pa.Table:
    """``table`` with the CAM method of its maps and ``per_image`` columns (name -> (one value per row
    in the order scored, its description); the faithfulness of each image's map, see
    :meth:`~hf_gazecons.faithfulness_report.FaithfulnessResult.per_image_columns`) appended."""
    columns = {"cam_method": ([cam_method] * table.num_rows, "the CAM method the maps were computed with")}
    for name, (values, doc) in (per_image or {}).items():
        if len(values) != table.num_rows:
            raise MetricError(f"{name} has {len(values)} values for a per-image table of {table.num_rows} rows")
        columns[name] = (list(values), doc)
    for name, (values, doc) in columns.items():
        array = pa.array(values, type=pa.string() if name == "cam_method" else pa.float64())
        table = table.append_column(pa.field(name, array.type, metadata={"doc": doc}), array)
    return table


def samples_path(directory: str | Path, samples_format: str) -> Path:
    """``directory/samples.parquet`` or ``directory/samples.csv``."""
    return Path(directory) / f"samples.{samples_format}"


def write_samples(table: pa.Table, directory: str | Path, samples_format: str = "parquet") -> Path:
    """Write the table with pyarrow: parquet (the column descriptions in its schema) or CSV."""
    if samples_format not in ("parquet", "csv"):
        raise UsageError(f"the per-image table is written as parquet or csv, not {samples_format!r}")
    path = samples_path(directory, samples_format)
    if samples_format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv

        pyarrow.csv.write_csv(table, path)
    return path


def read_samples(directory: str | Path) -> pa.Table | None:
    """The table of an output folder (``samples.parquet``, else ``samples.csv``), or None."""
    directory = Path(directory)
    if (directory / "samples.parquet").is_file():
        import pyarrow.parquet as pq

        return pq.read_table(directory / "samples.parquet")
    if (directory / "samples.csv").is_file():
        import pyarrow.csv

        return pyarrow.csv.read_csv(directory / "samples.csv")
    return None
