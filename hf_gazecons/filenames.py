"""The file names of a training output that several modules read or write."""

RESULTS_FILE = "results.json"
"""``config``, ``final`` (the last evaluation's metrics) and ``history`` (one entry per epoch)."""

GAZE_STATE_FILE = "gazecons_state.safetensors"
"""The regulariser's EMA class maps, saved beside the weights of every checkpoint."""

CLASS_MAPS_FILE = "class_maps.safetensors"
"""The final evaluation's class-mean maps (``score``, ``train``): the reference of ``hf-gazecons app``."""

EXAMPLES_DIR = "examples"
"""Overlays of each class's most and least consistent images, listed in ``examples/examples.json``."""

REPORT_FILE = "report.html"
"""The self-contained report of an output folder (``hf-gazecons report``)."""

SAMPLES_FORMATS = ("parquet", "csv", "none")
"""``--samples-format``: ``samples.parquet``, ``samples.csv``, or no per-image table (and no temporary maps)."""
