"""Strict JSON output files: every value that is undefined is ``null``, never ``NaN`` or ``Infinity``.

``json.dumps`` writes non-finite floats as the bare words ``NaN``/``Infinity``, which JSON does not
have (``jq``, JavaScript and most other readers reject the file). :func:`write_json` writes them
as ``null``, the same "no value" that undefined metrics have everywhere else in hf_gazecons.

    >>> strict({"kappa": float("nan"), "history": [1.0, float("inf")]})
    {'kappa': None, 'history': [1.0, None]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["strict", "write_json"]


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively; tuples become lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as strict, indented JSON (``allow_nan=False`` guards the conversion)."""
    path = Path(path)
    path.write_text(json.dumps(strict(data), indent=2, allow_nan=False) + "\n")
    return path
