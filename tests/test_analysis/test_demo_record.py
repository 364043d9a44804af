"""make demo states what it prints: a record made with the current code, and a check that the
code still computes it."""
import json
import os.path as osp

import pytest

from mmnorm_plugin.analysis.demo_record import (FINGERPRINT_IMAGES, compare_losses, fingerprint,
                                                summary)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RECORD = osp.join(ROOT, 'docs', 'evidence', 'demo.json')


def test_losses_compare_within_rounding_and_name_the_first_difference():
    recorded = [2.5, 2.4, 2.3]
    assert compare_losses(recorded, [2.5 * (1 + 1e-6), 2.4, 2.3]) is None
    assert compare_losses(recorded, [2.5, 2.41, 2.3]) == 'iteration 2: loss 2.41, recorded 2.4'
    assert 'the record has 3' in compare_losses(recorded, [2.5, 2.4])


def test_the_record_names_its_code_and_what_the_docs_say_comes_from_it():
    with open(RECORD) as f:
        record = json.load(f)
    assert len(record['commit']) == 40 and record['dirty'] is False
    assert len(record['fingerprint']['losses']) == FINGERPRINT_IMAGES
    text = summary(record)
    assert f"{record['metrics']['coco/bbox_mAP']:.3f}" in text and record['commit'][:7] in text


@pytest.mark.slow
def test_the_code_still_computes_what_the_demo_recorded(tmp_path):
    """A change of what the demo config computes (a norm's behaviour or default, the data, the
    pipeline) changes these losses from the first iterations on: record the demo again."""
    with open(RECORD) as f:
        record = json.load(f)
    problem = compare_losses(record['fingerprint']['losses'],
                             fingerprint(str(tmp_path), record['config']))
    assert problem is None, f'{problem}: run `make demo-record` and commit docs/evidence/demo.json'
