"""Which row of the data set each row of the per-image table is.

Scoring reads a data set in order, but ``--max-samples`` (``--max_eval_samples``) scores a seeded
random subset: :func:`with_row_index` adds the column ``index`` (the row's index in the split)
*before* the subset is drawn, and :func:`with_row_metadata` puts it, with the data set's ``id`` and
``planted`` columns where it has them, into the table. A stream has no such column: its table's
``index`` is the row's position in the stream.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

from ..errors import DataError

__all__ = ["ROW_INDEX", "ROW_METADATA", "with_row_index", "with_row_metadata"]

ROW_INDEX = "index"
ROW_METADATA = (ROW_INDEX, "id", "planted")
"""The data set's columns that the per-image table takes over, in this order, where they exist."""

_DOCS = {
    ROW_INDEX: "the image's row in the data set's split",
    "id": "the data set's id of the image",
    "planted": "the image is one of the built-in data set's planted images (its object away from its class's place)",
}


def with_row_index(dataset: datasets.Dataset | datasets.IterableDataset) -> datasets.Dataset | datasets.IterableDataset:
    """``dataset`` with an ``index`` column 0..n-1 (a map-style data set that lacks one; a stream as it is)."""
    if not isinstance(dataset, datasets.Dataset) or ROW_INDEX in dataset.column_names:
        return dataset
    return dataset.add_column(ROW_INDEX, np.arange(len(dataset), dtype=np.int64))


def with_row_metadata(table: pa.Table, dataset: datasets.Dataset | datasets.IterableDataset) -> pa.Table:
    """``table`` (rows in the order ``dataset`` was scored) with the data set's ``index``, ``id`` and
    ``planted`` columns first, where it has them; a stream's table is returned as it is."""
    if not isinstance(dataset, datasets.Dataset):
        return table
    present = [name for name in ROW_METADATA if name in dataset.column_names]
    if not present:
        return table
    metadata = dataset.select_columns(present).with_format("arrow")[:]
    if metadata.num_rows != table.num_rows:
        raise DataError(f"the per-image table has {table.num_rows} rows for a data set of {metadata.num_rows}")
    fields, arrays = [], []
    for name in present:
        column = metadata.column(name)
        fields.append(pa.field(name, column.type, metadata={"doc": _DOCS[name]}))
        arrays.append(column)
    rest = [name for name in table.column_names if name not in present]
    fields += [table.schema.field(name) for name in rest]
    arrays += [table.column(name) for name in rest]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
