"""tools/misc/compare_cbn_versions.py: the step-by-step comparison of two CBN versions."""
import importlib.util
import os.path as osp

import pytest
import torch

from mmnorm_plugin.norms.cbn import CBN

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    'compare_cbn_versions', osp.join(ROOT, 'tools', 'misc', 'compare_cbn_versions.py'))
cmp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cmp)


def _trace(steps=3):
    return [{'out/a': torch.full((2, 3), 1.0 + s), 'counter/x.hist_len': torch.tensor([s])}
            for s in range(steps)]


def test_compare_traces_reports_the_first_difference_and_its_size():
    same = cmp.compare_traces(_trace(), _trace())
    assert same['first_difference'] is None
    assert all(cell[2] for row in same['rows'] for cell in row.values())

    new = _trace()
    new[1]['out/a'][0, 1] = torch.nextafter(new[1]['out/a'][0, 1], torch.tensor(10.0))
    new[2]['counter/x.hist_len'] = torch.tensor([7])
    new[2]['window/x.hist_valid'] = torch.tensor([True])
    result = cmp.compare_traces(_trace(), new)
    assert result['first_difference'] == (2, 'out/a')
    abs_diff, rel_diff, identical = result['rows'][1]['out']
    assert not identical and abs_diff == 2**-22 and abs(rel_diff - 2**-23) < 1e-12  # one ulp
    assert result['rows'][0]['out'][2] and result['rows'][2]['out'][2]
    assert result['rows'][2]['counter'][:2] == (1.0, 1.0)  # integer state: entries that differ
    assert result['only_new'] == ['window/x.hist_valid'] and result['only_old'] == []


def test_align_window_reductions_changes_shapes_not_values():
    # the diagnostic must compute the same quantities (only the reductions' shapes differ):
    # in float64 both agree to rounding at every step, window filling included
    class Aligned(CBN):
        pass

    cmp.align_window_reductions(Aligned)
    inputs = cmp.make_inputs(steps=6)
    plain = cmp.run_version(inputs, torch.float64, eval_every=3)
    aligned = cmp.run_version(inputs, torch.float64, eval_every=3, cbn_cls=Aligned)
    result = cmp.compare_traces(plain, aligned)
    assert {'out', 'grad_in', 'grad_param', 'param', 'running', 'window', 'counter',
            'eval'} <= set(result['rows'][-1]) | set(result['rows'][2])
    for row in result['rows']:
        for cat, (_, rel_diff, _) in row.items():
            assert rel_diff < 1e-12, (cat, rel_diff)
    assert CBN._projections is not Aligned._projections  # the layer itself is untouched


@pytest.mark.slow  # two processes that import the plugin: ~30 s on a busy 2-core machine
def test_same_version_on_both_sides_is_bit_identical():
    # the CLI path: two processes, each importing this checkout's package
    result = cmp.compare_versions(cmp.WORKTREE, cmp.WORKTREE, steps=4, eval_every=2)
    assert result['first_difference'] is None
    assert result['only_old'] == result['only_new'] == []
    assert len(result['rows']) == 4 and set(result['rows'][1]) == set(cmp.CATEGORIES)
    assert 'first difference: none (bit-identical)' in cmp.format_table(result)
