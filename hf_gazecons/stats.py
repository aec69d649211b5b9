"""Small statistics the reports share: Pearson r, Spearman rank correlation of maps, mean and std,
intervals of a mean, a proportion, a difference and a correlation.

No plotting and no model code here, so that a table can be computed without importing matplotlib
(or torch, which only the rank correlation of maps needs).

    >>> pearson_r([0.1, 0.5, 0.9], [0.3, 0.2, 0.1])
    -1.0
    >>> mean_std([1.0, 2.0, None])
    (1.5, 0.7071067811865476, 2)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "average_ranks",
    "correlation_interval",
    "difference_interval",
    "interval_sign",
    "mean_interval",
    "mean_std",
    "pearson_r",
    "proportion_interval",
    "spearman",
]


def pearson_r(x: Sequence[float | None], y: Sequence[float | None]) -> float | None:
    """Pearson correlation over the pairs where both values exist; None if fewer than 3 or constant."""
    pairs = np.array([(a, b) for a, b in zip(x, y) if a is not None and b is not None], dtype=np.float64)
    if len(pairs) < 3 or pairs[:, 0].std() == 0 or pairs[:, 1].std() == 0:
        return None
    return float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1])


def _present(values: Iterable[float | None]) -> list[float]:
    """The values that exist: neither None nor NaN."""
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (ddof=1; None for one value) of the values that exist,
    and how many there are."""
    kept = _present(values)
    if not kept:
        return None, None, 0
    std = float(np.std(kept, ddof=1)) if len(kept) > 1 else None
    return float(np.mean(kept)), std, len(kept)


def mean_interval(
    values: Iterable[float | None], level: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[float, float] | None:
    """Student's t interval of the mean of the values that exist; None for fewer than 2 or none
    spread. ``bounds``: the range the true mean cannot leave (e.g. (0, 1) for an AUC of
    probabilities); the interval is cut to it, which keeps its coverage, since the mean lies inside."""
    from scipy import stats

    kept = _present(values)
    if len(kept) < 2 or np.ptp(kept) == 0:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(kept) - 1) * np.std(kept, ddof=1) / math.sqrt(len(kept))
    low, high = float(np.mean(kept) - half), float(np.mean(kept) + half)
    return (max(low, bounds[0]), min(high, bounds[1])) if bounds else (low, high)


def proportion_interval(successes: float, trials: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``successes / trials``: inside [0, 1] however small the
    count or extreme the share (a normal interval of a share is not); None without trials.

    >>> [round(v, 4) for v in proportion_interval(0, 10)]
    [0.0, 0.2775]
    """
    from scipy import stats

    if trials <= 0:
        return None
    z = stats.norm.ppf(0.5 + level / 2)
    share = min(max(successes / trials, 0.0), 1.0)
    denominator = 1 + z**2 / trials
    centre = (share + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2)) / denominator
    low = 0.0 if share == 0 else float(centre - half)  # exact ends where the rounding would miss 0 or 1
    return low, 1.0 if share == 1 else float(centre + half)


def correlation_interval(values: Iterable[float | None], level: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of the mean of correlations measured once per seed: Student's t on
    Fisher's z = atanh(r), mapped back with tanh, so that it stays inside (-1, 1) however few the
    seeds or however close to ±1 the values. None for fewer than 2 values."""
    from scipy import stats

    z = np.arctanh(np.clip([float(v) for v in values if v is not None], -1 + 1e-9, 1 - 1e-9))
    if len(z) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(z) - 1) * np.std(z, ddof=1) / math.sqrt(len(z))
    return float(np.tanh(z.mean() - half)), float(np.tanh(z.mean() + half))


def difference_interval(
    values: Iterable[float | None],
    reference: Iterable[float | None],
    level: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float] | None:
    """Confidence interval of mean(values) - mean(reference) for two independent groups of seeds:
    Welch's t (unequal variances, ``scipy.stats.ttest_ind(equal_var=False)``). None when either group
    has fewer than 2 values or both are constant (no spread to judge the difference by).
    ``bounds``: the range the true difference cannot leave ((-1, 1) for two shares); the interval is
    cut to it, which keeps its coverage."""
    from scipy import stats

    a, b = _present(values), _present(reference)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    with warnings.catch_warnings():  # scipy's precision-loss warning for a constant group: its variance is exactly 0
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
    low, high = float(interval.low), float(interval.high)
    return (max(low, bounds[0]), min(high, bounds[1])) if bounds else (low, high)


def interval_sign(low: float, high: float) -> int:
    """-1 where the interval lies wholly below 0, +1 wholly above, 0 where it holds 0: the only
    differences and correlations the reports call signed.

    >>> interval_sign(-0.3, -0.1), interval_sign(-0.1, 0.2), interval_sign(0.05, 0.4)
    (-1, 0, 1)
    """
    return -1 if high < 0 else 1 if low > 0 else 0


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..P of each row of (N, P) ``x``, ties given their average rank (as scipy's rankdata)."""
    import torch

    x = x.detach().double()
    n, p = x.shape
    sorted_x, order = x.sort(dim=1, stable=True)
    new_group = torch.ones_like(sorted_x, dtype=torch.bool)
    new_group[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1  # tie-group id of each sorted position
    position = torch.arange(p, dtype=torch.float64).expand(n, p)
    sums = torch.zeros(n, p, dtype=torch.float64).scatter_add_(1, group, position)
    counts = torch.zeros(n, p, dtype=torch.float64).scatter_add_(1, group, torch.ones(n, p, dtype=torch.float64))
    mean_position = sums / counts.clamp(min=1)
    return torch.empty_like(x).scatter_(1, order, mean_position.gather(1, group) + 1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) Spearman rank correlation of each pair of maps (any shape after the first dim).

    NaN where either map is constant (no ranking), as ``scipy.stats.spearmanr``.
    """
    import torch

    a, b = a.detach().flatten(1).cpu(), b.detach().flatten(1).cpu()
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denominator = ra.norm(dim=1) * rb.norm(dim=1)
    r = (ra * rb).sum(dim=1) / denominator
    return torch.where(denominator > 0, r.clamp(-1.0, 1.0), torch.full_like(r, math.nan))
