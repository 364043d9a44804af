"""The positive control and the plateau: a proxy may rank small-batch norms only when its
references are trained and it shows BN losing more from a small batch than GN does."""
import json
import os.path as osp
import re
import subprocess
import sys

import pytest

from mmnorm_plugin.analysis.norm_sweep.control import (control_sentence, control_summary,
                                                       curves, format_control, plateau,
                                                       plot_curves, positive_control)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEED_LEVEL = [0.50, 0.46, 0.53, 0.48, 0.51]  # seed-to-seed spread far above the paired one
JITTER = [0.004, -0.003, 0.002, -0.004, 0.001]


def _records(bn_loss, gn_loss, seeds=range(5), last_step_gain=0.002):
    out = []
    for s in seeds:
        level = SEED_LEVEL[s]
        for arm, value in (('BN@8', level), ('GN@8', level - 0.02),
                           ('BN@1', level - bn_loss + JITTER[s]),
                           ('GN@1', level - 0.02 - gn_loss - JITTER[s] / 2)):
            rec = dict(arm=arm, seed=s, metrics={'coco/bbox_mAP': value})
            if arm.endswith('@8'):  # a curve rising, then flat within last_step_gain
                rec['curve'] = [dict(step=e, metrics={'coco/bbox_mAP': v}) for e, v in
                                ((8, value / 3), (16, value - 0.05),
                                 (24, value - last_step_gain), (32, value))]
            out.append(rec)
    return out


def test_bn_losing_more_than_gn_passes_the_control():
    control = positive_control(_records(bn_loss=0.03, gn_loss=0.0), small=[1])
    v = control['batches'][1]
    assert control['passed'] and v['passed']
    assert v['loss']['mean'] == pytest.approx(0.03, abs=0.005) and v['loss']['ci'][0] > 0
    assert v['interaction']['n'] == 5 and v['interaction']['ci'][0] > 0
    sentence = control_sentence(control)
    assert 'Positive control passes' in sentence and 'norms may be ranked on it' in sentence
    # the protocol needs the plateau too: a pass on unplateaued references ranks nothing
    records = _records(bn_loss=0.03, gn_loss=0.0, last_step_gain=0.05)
    unplateaued = control_sentence(control, plateau(records, ['BN@8', 'GN@8']))
    assert 'NOT plateaued' in unplateaued and 'nothing is ranked on it' in unplateaued
    assert 'may be ranked' not in unplateaued


@pytest.mark.parametrize('bn_loss, gn_loss, seeds', [
    (0.0, 0.0, range(5)),     # BN does not lose: nothing to fix on this proxy
    (0.03, 0.03, range(5)),   # BN loses, but so does GN: the small batch itself, not BN
    (-0.03, 0.0, range(5)),   # BN *gains* from the small batch
])
def test_no_effect_or_a_shared_effect_fail_the_control(bn_loss, gn_loss, seeds):
    control = positive_control(_records(bn_loss, gn_loss, seeds), small=[1])
    assert not control['passed'] and not control['batches'][1]['passed']
    assert control['status'] == control['batches'][1]['status'] == 'fails'
    sentence = control_sentence(control)
    assert 'Positive control fails' in sentence
    assert "does not reproduce BN's small-batch failure" in sentence
    assert 'ranks nothing' in sentence
    # it names the half not shown: BN's own loss always here; the interaction unless GN gains
    assert 'Not shown (interval reaching 0): that BN at 1 loses against 8 images' in sentence \
        or bn_loss > 0
    assert ('that BN at 1 loses more than GN' in sentence) == (bn_loss <= gn_loss)
    if bn_loss < 0:  # a gain reads as a negative difference, never as "loses -3.0"
        assert 'BN@8 − BN@1 is -3.0 [' in sentence and 'loses -' not in sentence


@pytest.mark.parametrize('seeds', [range(1), range(4)])
def test_too_few_seeds_decide_nothing(seeds):
    """The effect, but fewer than 5 paired seeds: not passed, and not called a failure."""
    control = positive_control(_records(0.03, 0.0, seeds), small=[1])
    assert not control['passed'] and control['status'] == 'pending'
    sentence = control_sentence(control)
    assert sentence.startswith('Positive control not passed yet') and 'fails' not in sentence
    assert 'reproduce' not in sentence  # neither verdict's meaning before 5 pairs
    table = format_control(control)
    assert 'not decided: fewer than 5 pairs' in table and '(n=1) (n=1)' not in table
    if len(seeds) == 1:  # no interval: the mean and n once
        assert re.search(r'\| b = 1 \| \+\d\.\d \(n=1\) \| ', table), table


def _setting(label, bn_loss, seeds=range(5), last_step_gain=0.002):
    records = _records(bn_loss, 0.0, seeds, last_step_gain)
    return label, positive_control(records, small=[1]), plateau(records, ['BN@8', 'GN@8'])


def test_the_summary_ranks_only_where_a_plateaued_control_passed():
    failed, passed = _setting('scratch', 0.0), _setting('fine-tuned', 0.03)
    text = control_summary([failed, _setting('fine-tuned', 0.03, range(3))])
    assert 'scratch: fails; fine-tuned: not decided yet. None has passed yet' in text
    assert "rank no norm: the advice rests on the papers' published COCO results." in text
    text = control_summary([failed, _setting('fine-tuned', 0.0)])
    assert 'fine-tuned: fails. No setting reproduces' in text and 'rank no norm' in text
    # a pass whose references are still climbing counts for nothing yet
    early = _setting('fine-tuned', 0.03, last_step_gain=0.05)
    assert early[1]['status'] == 'passes'
    assert 'fine-tuned: not decided yet' in control_summary([failed, early])
    text = control_summary([failed, passed])
    assert 'fine-tuned: passes' in text and 'rank no norm' not in text
    assert 'only where the control passed (fine-tuned)' in text
    with pytest.raises(ValueError):
        control_summary([])


def test_a_missing_small_batch_is_not_judged_and_nothing_passes_without_one():
    control = positive_control(_records(0.03, 0.0), small=[2])
    assert control['batches'] == {} and not control['passed']


def test_plateau_is_the_last_two_evaluations_within_the_margin():
    flat = plateau(_records(0.03, 0.0), ['BN@8', 'GN@8'])
    assert flat['all_plateaued'] and flat['arms']['BN@8']['steps'] == [24, 32]
    assert flat['arms']['BN@8']['difference']['mean'] == pytest.approx(0.002)
    rising = plateau(_records(0.03, 0.0, last_step_gain=0.03), ['BN@8', 'GN@8'])
    assert not rising['all_plateaued'] and rising['arms']['GN@8']['plateaued'] is False
    none = plateau([dict(arm='BN@8', seed=0, metrics={'coco/bbox_mAP': 0.1})], ['BN@8'])
    assert none['arms']['BN@8']['plateaued'] is None and not none['all_plateaued']
    assert flat['status'] == 'yes' and rising['status'] == 'no' and none['status'] == 'pending'


@pytest.mark.parametrize('seeds', [range(1), range(2)])
def test_a_flat_tail_on_fewer_than_3_seeds_is_a_pilot_not_a_plateau(seeds):
    records = _records(0.03, 0.0, seeds)
    p = plateau(records, ['BN@8', 'GN@8'])
    assert p['arms']['BN@8']['plateaued'] and not p['arms']['BN@8']['decided']
    assert p['status'] == 'pending' and not p['all_plateaued']
    text = format_control(positive_control(records, small=[1]), p)
    assert '| yes (pilot: fewer than 3 seeds) |' in text
    assert 'Plateau: not decided yet: a reference has fewer than 3 seeds' in text
    assert "(the references' plateau is not decided yet)" in text
    # too few seeds decide nothing either way; three seeds decide
    rising = plateau(_records(0.03, 0.0, seeds, last_step_gain=0.03), ['BN@8', 'GN@8'])
    assert rising['status'] == 'pending' and rising['arms']['GN@8']['plateaued'] is False
    assert plateau(_records(0.03, 0.0, range(3)), ['BN@8', 'GN@8'])['status'] == 'yes'


def test_a_reference_without_a_curve_leaves_the_plateau_undecided():
    records = [r for r in _records(0.03, 0.0) if r['arm'] != 'GN@8' or r.pop('curve', 0) or 1]
    p = plateau(records, ['BN@8', 'GN@8'])
    assert p['arms']['BN@8']['plateaued'] and p['arms']['GN@8']['plateaued'] is None
    assert p['status'] == 'pending' and not p['all_plateaued']


def test_curves_keep_the_steps_every_seed_evaluated():
    records = _records(0.03, 0.0)
    records[0]['curve'] = records[0]['curve'][1:]  # seed 0 of BN@8 lacks step 8
    c = curves(records, 'BN@8')
    assert c['steps'] == [16, 24, 32] and c['seeds'] == [0, 1, 2, 3, 4]


def test_the_report_states_both_verdicts_and_draws_the_curves(tmp_path):
    records = _records(0.03, 0.0, last_step_gain=0.03)
    text = format_control(positive_control(records, small=[1]),
                          plateau(records, ['BN@8', 'GN@8']), 'proxy')
    assert 'NOT every reference has plateaued' in text
    assert 'Positive control passes (but the references have NOT plateaued)' in text
    assert '| b = 1 | +3.0 [' in text
    plot_curves(records, ['BN@8', 'GN@8'], str(tmp_path / 'c.png'), 'proxy')
    assert (tmp_path / 'c.png').stat().st_size > 0


def test_cli_writes_the_control_beside_the_report(tmp_path):
    path = tmp_path / 'in.json'
    path.write_text(json.dumps(dict(title='t', records=_records(0.03, 0.0))))
    done = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'norm_sweep.py'), '--from-json',
         str(path), '--reference', 'BN@8', '--control', '--report', str(tmp_path / 'rep')],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / 'rep_control.md').read_text()
    assert 'Positive control passes (references plateaued)' in text
    # the table drawn from the proxy carries the verdict beside it
    assert (tmp_path / 'rep.md').read_text().rstrip().endswith('norms may be ranked on it.')
    assert (tmp_path / 'rep_curves.png').stat().st_size > 0
