"""The norm fingerprint (tools/misc/norm_fingerprint.py): deterministic, and it notices."""
import copy
import json
import os.path as osp

from mmnorm_plugin.benchmarks.fingerprint import (compare_fingerprints, dump_fingerprint,
                                                  norm_fingerprint)

RECORD = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'docs',
                  'refactor_fingerprint_before.json')


def test_fingerprint_is_deterministic_and_names_every_difference():
    first = norm_fingerprint(['CBN', 'load-bn-into-BGN'])
    second = json.loads(dump_fingerprint(norm_fingerprint(['CBN', 'load-bn-into-BGN'])))
    assert compare_fingerprints(first, second) == []
    steps = first['scenarios']['CBN']
    assert [r['step'] for r in steps][:3] == ['0:train', '1:train', '2:eval']
    # the window, the gradients of the producing conv and the iteration mirrors are covered
    assert {'state.1.hist_mean', 'grad.0.weight', 'input_grad', 'mirrors'} <= set(steps[-2])
    changed = copy.deepcopy(second)
    changed['scenarios']['CBN'][5]['state.1.running_var'] = '0' * 16
    assert compare_fingerprints(first, changed) == [
        'CBN step 5:nan: state.1.running_var differs']


def test_a_different_computation_gives_different_digests():
    a = norm_fingerprint(['BGN'])['scenarios']['BGN']
    b = norm_fingerprint(['BGN-G1-cumulative'])['scenarios']['BGN-G1-cumulative']
    assert a[0]['output'] != b[0]['output']


def test_the_recorded_fingerprint_covers_every_scenario():
    with open(RECORD) as f:
        recorded = json.load(f)
    current = norm_fingerprint(['CBN'])
    assert 'CBN' in recorded['scenarios'] and recorded['meta']['commit']
    assert set(recorded['scenarios']['CBN'][0]) == set(current['scenarios']['CBN'][0])
