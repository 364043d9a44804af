"""The benchmark harness reports ratios against the baseline (no timing is asserted)."""
import pytest
import torch
from torch import nn

from mmnorm_plugin.benchmarks.layer_benchmark import compare_norms, format_rows, parse_shape


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


def _rank_collective_bytes(rank, world):
    import functools

    from mmnorm_plugin.norms.bgn import SyncBGN
    from mmnorm_plugin.norms.bkn import SyncBKN
    from mmnorm_plugin.norms.cbn import SyncCBN
    from mmnorm_plugin.benchmarks.layer_benchmark import collective_bytes
    shape = (2, 16, 6, 6)
    return {name: collective_bytes(make, shape) for name, make in (
        ('SyncCBN', SyncCBN), ('SyncBGN', functools.partial(SyncBGN, num_groups=4)),
        ('SyncBKN', SyncBKN), ('BN', torch.nn.BatchNorm2d))}


def test_collective_bytes_are_the_readmes_communication_table(run_ranks):
    """C=16, k=3, G=4: forward float64 packs, backward float32 sums; BN sends nothing."""
    c, k, g = 16, 3, 4
    expected = {'SyncCBN': ((k + 1) * (2 * c + 1) * 8, 2 * c * 4),
                'SyncBGN': ((2 * g + 1) * 8, 2 * g * 4),
                'SyncBKN': ((2 * c + 1) * 8, 2 * c * 4), 'BN': (0, 0)}
    for rank in run_ranks(__file__, '_rank_collective_bytes'):
        assert {k: rank[k] for k in expected} == expected


def test_compiled_rows_time_both_modes_of_each_norm():
    from mmnorm_plugin.norms.bkn import BKN
    from mmnorm_plugin.benchmarks.layer_benchmark import compare_compiled, format_compiled_rows
    rows = compare_compiled({'BN': (nn.BatchNorm2d, nn.Conv2d), 'BKN': (BKN, nn.Conv2d)},
                            shape=(2, 3, 8, 8), width=4, warmup=1, iters=3,
                            backend='aot_eager')
    assert [r['name'] for r in rows] == ['BN', 'BKN']
    for r in rows:
        assert r['eager_ms'] > 0 and r['compiled_ms'] > 0 and r['compile_s'] > 0
        assert r['speedup'] == pytest.approx(r['eager_ms'] / r['compiled_ms'])
    assert 'BKN' in format_compiled_rows(rows)
    with pytest.raises(ValueError):
        compare_compiled({'BN': (nn.BatchNorm2d, nn.Conv2d)}, iters=2)
