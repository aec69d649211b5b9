"""How metric values read in tables and messages."""

from __future__ import annotations

import math


def fmt_metric(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for a missing or non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``mean ± std`` (``mean`` alone without a std; ``n/a`` without a mean)."""
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
