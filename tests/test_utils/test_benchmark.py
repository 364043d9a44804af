"""The benchmark harness reports ratios against the baseline (no timing is asserted)."""
import pytest
from torch import nn

from mmnorm_plugin.utils.benchmark import compare_norms, format_rows, parse_shape


def test_rows_are_ratios_against_the_baseline():
    rows = compare_norms({'BN': nn.BatchNorm2d, 'GN': lambda c: nn.GroupNorm(4, c)},
                         [(2, 8, 6, 6)], warmup=1, iters=3)
    by_name = {r['name']: r for r in rows}
    assert by_name['BN']['time_ratio'] == 1.0 and by_name['BN']['mem_ratio'] == 1.0
    # BN keeps running statistics, GN none; both save their input for backward
    assert by_name['BN']['state_mb'] > 0 and by_name['GN']['state_mb'] == 0
    assert by_name['GN']['saved_mb'] >= 2 * 8 * 6 * 6 * 4 / 2**20
    assert 'GN' in format_rows(rows)


def test_bad_arguments():
    with pytest.raises(KeyError):
        compare_norms({'GN': lambda c: nn.GroupNorm(4, c)}, [(2, 8, 6, 6)], baseline='BN')
    with pytest.raises(ValueError):
        compare_norms({'BN': nn.BatchNorm2d}, [(2, 8, 6, 6)], iters=2)
    assert parse_shape('2,256,7,7') == (2, 256, 7, 7)
    with pytest.raises(Exception):
        parse_shape('2,256')
