"""The shared statistics against scipy and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hf_gazecons.stats import (
    average_ranks,
    correlation_interval,
    difference_interval,
    interval_sign,
    mean_interval,
    mean_std,
    pearson_r,
    proportion_interval,
    spearman,
)


def test_ranks_and_spearman_match_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(20, 49, generator=generator).mul(6).floor() / 6  # many ties, as ReLU'd maps have
    b = torch.rand(20, 49, generator=generator)
    b[:5] = (b[:5] * 3).floor()
    b[5] = a[5]
    b[6] = -a[6]
    ours = spearman(a.view(20, 7, 7), b.view(20, 7, 7)).numpy()
    expected = [stats.spearmanr(x, y).statistic for x, y in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    assert ours[5] == pytest.approx(1.0) and ours[6] == pytest.approx(-1.0)
    np.testing.assert_allclose(average_ranks(a).numpy(), np.stack([stats.rankdata(x) for x in a.numpy()]))


def test_constant_map_has_no_spearman():
    a = torch.rand(2, 4, 4)
    b = torch.stack([torch.zeros(4, 4), torch.rand(4, 4)])
    r = spearman(a, b)
    assert math.isnan(r[0]) and not math.isnan(r[1])


def test_pearson_r_skips_missing_pairs_and_needs_three_varying_ones():
    x = [0.1, None, 0.4, 0.2, 0.9, 0.5]
    y = [1.0, 2.0, None, 0.5, 3.0, 1.5]
    kept = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    assert pearson_r(x, y) == pytest.approx(stats.pearsonr(*zip(*kept)).statistic)
    assert pearson_r([1.0, 2.0], [3.0, 4.0]) is None
    assert pearson_r([1.0, 1.0, 1.0], [3.0, 4.0, 5.0]) is None


def test_mean_std_is_the_sample_statistic_of_what_exists():
    assert mean_std([1.0, None, 3.0, math.nan, 5.0]) == (3.0, pytest.approx(2.0), 3)
    assert mean_std([2.0]) == (2.0, None, 1)
    assert mean_std([None]) == (None, None, 0)


def test_correlation_interval_is_a_t_interval_on_fishers_z():
    r = [-0.9, -0.7, -0.95, -0.2, -0.8]
    z = np.arctanh(r)
    half = stats.t.ppf(0.975, 4) * z.std(ddof=1) / math.sqrt(5)
    low, high = correlation_interval(r)
    assert (low, high) == pytest.approx((math.tanh(z.mean() - half), math.tanh(z.mean() + half)))
    assert -1 < low < high < 0  # the raw-r t interval of these values reaches below -1
    low, high = correlation_interval([0.5, -0.5, 0.4, -0.4, None])
    assert low < 0 < high and low == pytest.approx(-high)
    assert correlation_interval([0.3]) is None
    assert all(-1 <= v <= 1 for v in correlation_interval([-1.0, -0.99]))  # r = -1 has an infinite z


def test_difference_interval_is_welchs_t_interval():
    a, b = [0.30, 0.21, 0.39, 0.28, 0.35], [0.18, 0.16, 0.17]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    difference = np.mean(a) - np.mean(b)
    assert difference_interval(a + [None, math.nan], b) == pytest.approx((difference - half, difference + half))
    low, high = difference_interval(b, a)
    assert low < high < 0
    assert difference_interval([0.1, 0.2, 0.3], [0.0, 0.0, 0.0]) is not None  # one constant group has a spread
    assert difference_interval([0.0, 0.0], [0.0, 0.0]) is None
    assert difference_interval([0.3], [0.1, 0.2]) is None


def test_a_bounded_difference_interval_is_cut_to_its_range():
    shares, baseline = [1.0, 1.0, 0.96, 0.88, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]
    low, high = difference_interval(shares, baseline)
    assert high > 1  # Welch's t does not know that two shares differ by at most 1
    assert difference_interval(shares, baseline, bounds=(-1.0, 1.0)) == pytest.approx((low, 1.0))


def test_mean_interval_is_scipys_t_interval():
    values = [0.42, 0.55, 0.31, 0.6, 0.47, None]
    expected = stats.ttest_1samp([v for v in values if v is not None], 0.0).confidence_interval(0.95)
    assert mean_interval(values) == pytest.approx((expected.low, expected.high))
    assert mean_interval([0.01, 0.02, 0.0, 0.0], bounds=(0.0, 1.0))[0] == 0.0  # t reaches below 0, a mean cannot
    assert mean_interval([0.3]) is None and mean_interval([0.2, 0.2]) is None


@pytest.mark.parametrize("successes, trials", [(0, 10), (3, 10), (10, 10), (17, 93), (1, 2)])
def test_proportion_interval_is_scipys_wilson_interval(successes, trials):
    expected = stats.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = proportion_interval(successes, trials)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert 0.0 <= low <= successes / trials <= high <= 1.0
    assert proportion_interval(0, 0) is None


def test_interval_sign_calls_only_intervals_that_exclude_0():
    assert [interval_sign(*i) for i in [(-0.3, -0.1), (-0.1, 0.2), (0.05, 0.4), (-0.2, 0.0), (0.0, 0.1)]] == [
        -1, 0, 1, 0, 0
    ]  # fmt: skip
