"""The shared statistics against scipy and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hf_gazecons.stats import average_ranks, mean_std, pearson_r, spearman


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
