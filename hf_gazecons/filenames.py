"""The file names of a training output that several modules read or write."""

RESULTS_FILE = "results.json"
"""``config``, ``final`` (the last evaluation's metrics) and ``history`` (one entry per epoch)."""

GAZE_STATE_FILE = "gazecons_state.safetensors"
"""The regulariser's EMA class maps, saved beside the weights of every checkpoint."""
