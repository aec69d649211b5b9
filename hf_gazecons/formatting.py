"""How metric values read in tables and messages."""

from __future__ import annotations

import math


def fmt_metric(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for a missing or non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"
