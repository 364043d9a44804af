"""The detection-study collector reads run_demo.sh's work dirs, tabulates and plots."""
import json
import os
import os.path as osp

import pytest

from mmnorm_plugin.analysis.detection_study import (format_table, parse_arms, plot_study,
                                                    read_arm)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _fake_run(work_dir, mAP, start='20261201_120000'):
    """What run_demo.sh leaves: a training timestamp folder, a test metrics JSON."""
    os.makedirs(work_dir / 'train' / start)
    (work_dir / 'train' / 'arm.py').write_text('')  # the config mmengine dumps
    test = work_dir / 'test' / '20261201_120500'
    os.makedirs(test)
    metrics = {'coco/bbox_mAP': mAP, 'coco/bbox_mAP_50': mAP + 0.2, 'coco/bbox_mAP_75': mAP - 0.1}
    path = test / '20261201_120500.json'
    path.write_text('{"ignored": 1}\n' + json.dumps(metrics) + '\n')
    return path


def test_read_arm_takes_last_line_and_wall_time(tmp_path):
    path = _fake_run(tmp_path / 'bn8', 0.5)
    start = __import__('datetime').datetime(2026, 12, 1, 12, 0, 0).timestamp()
    os.utime(path, (start + 321, start + 321))
    arm = read_arm('BN-8', str(tmp_path / 'bn8'))
    assert arm == dict(name='BN-8', config='arm.py', norm_cfg_options={}, mAP=0.5, AP50=0.7,
                       AP75=0.4, seconds=321)
    assert '| BN-8 | 0.500 | 0.700 | 0.400 | 5 min 21 s |' in format_table([arm])


def test_missing_run_and_bad_spec_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing'):
        read_arm('x', str(tmp_path / 'nothing'))
    with pytest.raises(ValueError, match='NAME=WORK_DIR'):
        parse_arms(['no-equals-sign'])


def test_plot_writes_png_and_checks_references(tmp_path):
    for name, value in (('bn8', 0.5), ('bn1', 0.3)):
        _fake_run(tmp_path / name, value)
    arms = parse_arms([f'BN-8={tmp_path / "bn8"}', f'BN-1={tmp_path / "bn1"}'])
    out = plot_study(arms, str(tmp_path / 'plot.png'), references=['BN-8', 'BN-1'])
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(KeyError, match='GN-1'):
        plot_study(arms, str(tmp_path / 'other.png'), references=['GN-1'])


def _cli():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'detection_study_cli', osp.join(ROOT, 'tools', 'analysis', 'detection_study.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_cli_redraws_from_saved_json_without_work_dirs(tmp_path):
    """docs/small_batch_detection.json predates provenance: it still draws, and a rewrite
    (--json) keeps its rows as they are, with no commit invented for them."""
    cli = _cli()
    out, saved = tmp_path / 'chart.png', osp.join(ROOT, 'docs', 'small_batch_detection.json')
    cli.main(['--from-json', saved, '--out', str(out), '--json', str(tmp_path / 'again.json')])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    rows = json.load(open(saved))
    assert 'commit' not in rows[0] and json.loads((tmp_path / 'again.json').read_text()) == rows
    with pytest.raises(SystemExit, match='one of the two'):
        cli.main([])


def test_collected_rows_name_the_commit_and_the_command_that_reruns_them(tmp_path, git_head):
    import shlex
    for name, value in (('bn8', 0.5), ('bn1', 0.3)):
        _fake_run(tmp_path / name, value)
    argv = [f'BN-8={tmp_path / "bn8"}', f'BN-1={tmp_path / "bn1"}', '--out',
            str(tmp_path / 'p.png'), '--json', str(tmp_path / 'rows.json')]
    cli = _cli()
    cli.main(argv)
    rows = json.loads((tmp_path / 'rows.json').read_text())
    assert [r['commit'] for r in rows] == [git_head] * 2
    assert shlex.split(rows[0]['command']) == ['python', 'tools/analysis/detection_study.py',
                                               *argv]
    assert rows[1]['mAP'] == 0.3 and isinstance(rows[1]['dirty'], bool)
    # a redraw keeps each row's own provenance, not the redrawing command's
    cli.main(['--from-json', str(tmp_path / 'rows.json'), '--out', str(tmp_path / 'q.png'),
              '--json', str(tmp_path / 'again.json')])
    assert json.loads((tmp_path / 'again.json').read_text()) == rows


def test_demo_summary_names_every_row_by_config_and_options():
    """run_demo.sh's summary: rows of one config differ by their norm_cfg options, and no row
    is named by anything a reader cannot rerun (an internal issue number)."""
    import os.path as osp
    import re
    from mmnorm_plugin.analysis.detection_study import arm_label, compare_with_study
    root = osp.join(osp.dirname(__file__), '..', '..')
    study = json.load(open(osp.join(root, 'docs', 'small_batch_detection.json')))
    labels = [arm_label(a) for a in study]
    assert len(set(labels)) == len(labels)
    for arm in study:
        assert not re.search(r'issue', arm['name'] + arm_label(arm), re.I), arm
        assert osp.exists(osp.join(root, 'configs', 'small_batch', arm['config'])), arm
    config = 'configs/small_batch/faster-rcnn_r18-w16_fpn_cbn_1xb1_tiny-coco-hard.py'
    lines = compare_with_study(config, 0.5, study).splitlines()
    assert lines[0] == f'  0.500  this run ({osp.basename(config)})'
    rows = lines[1:]
    assert len(rows) == 6 and len(set(rows)) == 6  # BN-8, BN-1 and the four CBN arms
    assert "  0.409  faster-rcnn_r18-w16_fpn_cbn_1xb1_tiny-coco-hard.py + norm_cfg " \
        "running_stats='batch'" in rows


def test_the_demo_config_comments_name_what_make_demo_runs():
    import os.path as osp
    import re
    root = osp.join(osp.dirname(__file__), '..', '..')
    default = re.search(r'CONFIG=\$\{CONFIG:-([^}]+)\}',
                        open(osp.join(root, 'tools', 'run_demo.sh')).read()).group(1)
    text = open(osp.join(root, 'configs', 'demo',
                         'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py')).read()
    header = ' '.join(line.lstrip('# ') for line in text.splitlines() if line.startswith('#'))
    assert 'one-command demo' not in header
    assert f'`make demo` alone runs {default}' in header
