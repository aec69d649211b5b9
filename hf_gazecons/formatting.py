"""How metric values read in tables and messages."""

from __future__ import annotations

import math
from collections.abc import Sequence


def fmt_metric(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``n/a`` for a missing or non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_exact(value: float) -> str:
    """``value`` as text that reads back as the same float: the short ``%g`` form where it is exact
    (``100.0`` -> ``100``, ``1e-4`` -> ``0.0001``), else ``repr`` (``0.0012345678`` stays whole,
    where ``%g`` would keep 6 significant digits). For values passed on to another process."""
    value = float(value)
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def fmt_interval(interval: Sequence[float] | None, digits: int = 3) -> str:
    """``[low, high]``; empty without an interval."""
    return "" if interval is None else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``mean ± std`` (``mean`` alone without a std; ``n/a`` without a mean)."""
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_difference(
    values: Sequence[float | None],
    reference: Sequence[float | None],
    digits: int = 3,
    bounds: tuple[float, float] | None = None,
) -> str:
    """``Δ [low, high] word``: mean(values) - mean(reference) over seeds, its 95 % Welch interval
    (:func:`~hf_gazecons.stats.difference_interval`, cut to ``bounds``), and **lower** or **higher**
    only where the interval excludes 0 ("within the spread" otherwise; "no spread to judge by"
    without an interval)."""
    from .stats import difference_interval, interval_sign, mean_std

    mean, reference_mean = mean_std(values)[0], mean_std(reference)[0]
    if mean is None or reference_mean is None:
        return "n/a"
    difference = f"{mean - reference_mean:+.{digits}f}"
    interval = difference_interval(values, reference, bounds=bounds)
    if interval is None:
        return f"{difference} (no spread to judge by)"
    low, high = interval
    word = {-1: "**lower**", 0: "within the spread", 1: "**higher**"}[interval_sign(low, high)]
    return f"{difference} [{low:+.{digits}f}, {high:+.{digits}f}] {word}"
