"""Paired-seed statistics: known inputs, hand-computed answers."""
import math

import numpy as np
import pytest

from mmnorm_plugin.analysis.paired_stats import (format_interval, format_mean_std, holm,
                                                 paired_difference, summarize)


def test_t_interval_matches_the_protocol_formula():
    a = {0: 0.50, 1: 0.52, 2: 0.47, 3: 0.55, 4: 0.51}
    b = {0: 0.45, 1: 0.49, 2: 0.46, 3: 0.48, 4: 0.47}
    d = np.array([0.05, 0.03, 0.01, 0.07, 0.04])
    out = paired_difference(a, b)
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)  # t(0.975, 4)
    assert out['n'] == 5 and out['seeds'] == [0, 1, 2, 3, 4]
    assert out['mean'] == pytest.approx(0.04)
    assert out['ci'] == pytest.approx((0.04 - half, 0.04 + half))
    assert out['excludes_zero']
    lo, hi = out['boot_ci']  # percentile bootstrap: inside the range of the differences
    assert d.min() <= lo < 0.04 < hi <= d.max()
    # two-sided paired t-test
    t = 0.04 / (d.std(ddof=1) / math.sqrt(5))
    from scipy import stats
    assert out['p'] == pytest.approx(2 * stats.t.sf(t, 4))


def test_pairs_are_matched_by_seed_not_by_position():
    a = {3: 1.0, 1: 0.0, 7: 5.0}
    b = {1: 0.0, 3: 1.0}  # seed 7 has no partner
    out = paired_difference(a, b)
    assert out['seeds'] == [1, 3] and out['mean'] == 0.0 and out['sd'] == 0.0
    assert not out['excludes_zero'] and out['p'] == 1.0


def test_an_interval_straddling_zero_is_not_a_win():
    out = paired_difference({0: 0.5, 1: 0.4, 2: 0.6}, {0: 0.45, 1: 0.45, 2: 0.5})
    assert out['ci'][0] < 0 < out['ci'][1] and not out['excludes_zero']


def test_one_seed_gives_no_interval():
    out = paired_difference({0: 0.5}, {0: 0.4})
    assert out['mean'] == pytest.approx(0.1) and out['ci'] is None and out['p'] is None
    assert format_interval(out) == '+10.0 (n=1)'


def test_holm_bonferroni_on_known_p_values():
    out = holm({'a': 0.01, 'b': 0.04, 'c': 0.03})
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 with running max
    assert out['a']['p_adj'] == pytest.approx(0.03)
    assert out['c']['p_adj'] == pytest.approx(0.06)
    assert out['b']['p_adj'] == pytest.approx(0.06)
    assert [out[k]['reject'] for k in 'abc'] == [True, False, False]


def test_formatting_never_prints_a_zero_spread_for_one_run():
    assert format_mean_std(summarize([0.4123])) == '41.2 (n=1)'
    assert format_mean_std(summarize([0.4, 0.5])) == '45.0 ± 7.1 (n=2)'
    assert summarize([]) == dict(n=0, mean=None, std=None)
