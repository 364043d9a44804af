"""norm_sweep records are data from files: validated before use, one-line refusals naming the
file, paths built from validated fields only, and a fuzz of record files."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmnorm_plugin.analysis.norm_sweep.records import (RecordError, check_record,
                                                       import_records, load_records,
                                                       record_path)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
GOOD = dict(arm='BN@1', seed=0, metrics={'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_m': -1.0})


def _report(tmp_path, records):
    path = tmp_path / 'report.json'
    path.write_text(json.dumps(dict(title='t', records=records)))
    return str(path)


@pytest.mark.parametrize('record, problem', [
    (dict(GOOD, arm='../../escaped/x@1'), 'is not NORM@BATCH'),
    (dict(GOOD, arm='BN@x'), 'is not NORM@BATCH'),
    (dict(GOOD, arm='BN@0'), 'is not NORM@BATCH'),
    ({k: v for k, v in GOOD.items() if k != 'metrics'}, "no 'metrics'"),
    (dict(GOOD, metrics={'coco/bbox_mAP': '0.5'}), 'not a number'),
    (dict(GOOD, metrics={'coco/bbox_mAP': float('nan')}), 'outside'),
    (dict(GOOD, metrics={'coco/bbox_mAP': 57.0}), 'outside'),
    (dict(GOOD, metrics={'coco/bbox_mAP': True}), 'not a number'),
    (dict(GOOD, metrics={}), 'non-empty'),
    (dict(GOOD, metrics={'../x': 0.1}), 'plain identifier'),
    (dict(GOOD, seed='0'), 'seed'),
    (dict(GOOD, seed=-1), 'seed'),
    (dict(GOOD, seed=True), 'seed'),
    (dict(GOOD, norm='GN'), 'differs'),
    (dict(GOOD, images_per_batch=8), 'differs'),
    (dict(GOOD, commit='HEAD'), 'git hash'),
    (dict(GOOD, dirty='no'), 'true/false'),
    (dict(GOOD, curve=[dict(step=2, metrics={'coco/bbox_mAP': 0.1}),
                       dict(step=1, metrics={'coco/bbox_mAP': 0.2})]), 'curve point 1'),
    ([GOOD], 'JSON object'),
])
def test_a_bad_record_is_refused_in_one_line_naming_the_file(tmp_path, record, problem):
    path = _report(tmp_path, [GOOD, record] if isinstance(record, dict) else [record])
    with pytest.raises(RecordError) as err:
        load_records(path)
    message = str(err.value)
    assert problem in message and path in message and '\n' not in message


def test_a_report_that_is_not_an_object_with_records_is_refused(tmp_path):
    for content in ('[1, 2]', '{"records": {}}', 'not json', '{"title": "x"}'):
        path = tmp_path / 'r.json'
        path.write_text(content)
        with pytest.raises(RecordError, match=str(path)):
            load_records(str(path))


def test_the_same_arm_seed_twice_with_other_values_is_refused(tmp_path):
    other = dict(GOOD, metrics={'coco/bbox_mAP': 0.3})
    with pytest.raises(RecordError, match='BN@1 seed 0 is recorded twice'):
        load_records(_report(tmp_path, [GOOD, other]))
    assert load_records(_report(tmp_path, [GOOD, dict(GOOD)])) == [GOOD]  # an exact repeat


def test_a_record_file_must_hold_what_its_name_says(tmp_path):
    (tmp_path / 'records').mkdir()
    (tmp_path / 'records' / 'GN@1_seed0.json').write_text(json.dumps(GOOD))
    with pytest.raises(RecordError, match='not what its file name says'):
        load_records(str(tmp_path))


def test_paths_are_built_from_validated_fields_only(tmp_path):
    assert record_path('out', 'BN@1', 3) == osp.join('out', 'records', 'BN@1_seed3.json')
    for arm, seed in (('../x@1', 0), ('BN@1/..', 0), ('BN@1', '0/../..'), ('a/b@1', 1)):
        with pytest.raises(RecordError):
            record_path('out', arm, seed)
    with pytest.raises(RecordError):
        import_records([GOOD, dict(GOOD, arm='../../escaped/x@1')], str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()  # nothing written when one record is bad


def test_report_only_never_writes_outside_out(tmp_path):
    """The attack of a committed report: an arm named ``../../escaped/x@1``."""
    out = tmp_path / 'sweep'
    out.mkdir()
    # the report JSON of --report is imported as records before the report is written
    (out / 'evil.json').write_text(json.dumps(dict(title='x', records=[
        dict(GOOD, arm='../../escaped/x@1')])))
    done = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'norm_sweep.py'), '--out',
         str(out), '--report', str(out / 'evil'), '--report-only'],
        capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    assert 'is not NORM@BATCH' in done.stderr and 'Traceback' not in done.stderr
    assert not any('escaped' in dirs or 'escaped' in files
                   for _, dirs, files in os.walk(tmp_path))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10 ** 12),
                     st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=12), st.sampled_from(['BN@1', '../x@1', 'GN@8', '@1']))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ['arm', 'seed', 'metrics', 'norm', 'images_per_batch', 'curve', 'commit', 'dirty',
         'coco/bbox_mAP', 'step', 'records', 'x']), inner, max_size=6)), max_leaves=20)
_records = st.fixed_dictionaries({'arm': st.sampled_from(['BN@1', 'GN@8', 'C-1@2', '../x@1',
                                                          'BN@0', 1]),
                                  'seed': st.one_of(st.integers(-2, 3), st.text(max_size=2)),
                                  'metrics': st.one_of(_json, st.dictionaries(
                                      st.sampled_from(['coco/bbox_mAP', 'a b']),
                                      st.one_of(st.floats(-2, 60), st.just(float('nan'))), max_size=2))},
                                 optional={'curve': _json, 'commit': _json, 'norm': _json})


@settings(max_examples=int(os.environ.get('FUZZ_EXAMPLES', 300)), derandomize=True,
          deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(_json, st.lists(st.one_of(_records, _json), max_size=4)))
def test_fuzz_record_files_load_cleanly_or_are_refused_in_one_line(tmp_path_factory, content):
    """Whatever a report JSON holds: valid records come back valid, anything else is one
    RecordError line naming the file, and importing never writes outside the sweep."""
    tmp = tmp_path_factory.mktemp('fuzz')
    path = tmp / 'report.json'
    body = content if isinstance(content, dict) else dict(records=content)
    path.write_text(json.dumps(body))
    try:
        records = load_records(str(path))
    except RecordError as err:
        assert str(path) in str(err) and '\n' not in str(err)
        return
    for rec in records:
        assert check_record(rec) is rec
        assert all(v == -1.0 or 0 <= v <= 1 for v in rec['metrics'].values())
        assert not any(isinstance(v, float) and math.isnan(v) for v in rec['metrics'].values())
    import_records(records, str(tmp / 'out'))
    for folder, _, files in os.walk(tmp):
        assert folder == str(tmp) or folder.startswith(str(tmp / 'out'))
