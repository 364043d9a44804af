"""What a sweep's runs cost, read from the mmengine logs of every training session."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from mmnorm_plugin.analysis import docs_blocks
from mmnorm_plugin.analysis.norm_sweep.cost import format_costs, run_cost, sweep_costs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ITERS, VAL_ITERS = 100, 10  # per epoch; the logger writes every 50 iterations


def _session(train_dir, stamp, train, evals, clock):
    """One training session as mmengine leaves it: ``train`` is [(step, mean time)],
    ``evals`` [(epoch, mean time)], ``clock`` the seconds of its first and last log line."""
    session = train_dir / stamp
    (session / 'vis_data').mkdir(parents=True)
    lines = [dict(lr=0.01, loss=1.0, time=t, epoch=(s - 1) // ITERS + 1, iter=s, step=s)
             for s, t in train]
    lines += [{'coco/bbox_mAP': 0.3, 'time': t, 'step': e} for e, t in evals]
    (session / 'vis_data' / 'scalars.json').write_text(
        ''.join(json.dumps(line) + '\n' for line in lines))
    start, end = clock
    text = [f'2026/12/07 07:{start // 60:02d}:{start % 60:02d} - mmengine - INFO - start']
    text += [f'2026/12/07 07:{start // 60:02d}:{start % 60:02d} - mmengine - INFO - '
             f'Epoch(val)  [{e}][{VAL_ITERS}/{VAL_ITERS}]    eta: 0:00:00  time: {t}'
             for e, t in evals]
    text += [f'2026/12/07 07:{end // 60:02d}:{end % 60:02d} - mmengine - INFO - last']
    (session / f'{stamp}.log').write_text('\n'.join(text) + '\n')


def _resumed_run(train_dir):
    """Killed in epoch 2 after evaluating epoch 1; resumed from epoch 1's checkpoint, it redid
    epoch 2's first window at another speed and finished."""
    _session(train_dir, '20261207_070000', [(50, 1.0), (100, 1.0), (150, 3.0)], [(1, 0.5)],
             (0, 400))
    _session(train_dir, '20261207_071000', [(150, 2.0), (200, 2.0)], [(2, 0.25)], (600, 900))


def test_each_iteration_counts_once_from_the_session_that_kept_it(tmp_path):
    _resumed_run(tmp_path)
    cost = run_cost(str(tmp_path))
    # 50 + 50 from the first session, the redone window at the resumed session's 2.0 (not
    # 3.0, not both), and the last window
    assert cost['iteration_seconds'] == 50 * 1.0 + 50 * 1.0 + 50 * 2.0 + 50 * 2.0
    assert cost['iterations'] == 200
    assert cost['evaluations'] == 2
    assert cost['evaluation_seconds'] == (0.5 + 0.25) * VAL_ITERS
    # what the run actually took: both sessions' spans, the stop between them excluded
    assert cost['session_seconds'] == 400 + 300
    assert cost['sessions'] == 2


def test_a_half_written_line_of_a_killed_session_is_skipped(tmp_path):
    _resumed_run(tmp_path)
    with open(tmp_path / '20261207_070000' / 'vis_data' / 'scalars.json', 'a') as f:
        f.write('{"lr": 0.01, "time": 9.0, "iter": 1')  # killed while writing
    assert run_cost(str(tmp_path))['iteration_seconds'] == 300.0


def test_no_session_is_no_cost(tmp_path):
    assert run_cost(str(tmp_path)) is None


def test_a_run_costs_its_iterations_evaluations_and_test_and_the_table_totals_them(tmp_path):
    out = tmp_path / 'sweep'
    _resumed_run(out / 'runs' / 'BN@1_seed0' / 'train')
    _session(out / 'runs' / 'BN@8_seed0' / 'train', '20261207_080000', [(50, 4.0)], [], (0, 250))
    records = [dict(arm='BN@1', seed=0, threads=1, test_seconds=20.0, metrics={}),
               dict(arm='BN@8', seed=0, threads=2, test_seconds=10.0, metrics={}),
               dict(arm='GN@8', seed=0, threads=1, test_seconds=10.0, metrics={})]  # no logs
    costs = sweep_costs(str(out), records)
    assert [(c['arm'], c['seed']) for c in costs] == [('BN@1', 0), ('BN@8', 0)]
    bn1 = costs[0]
    assert bn1['run_seconds'] == 300.0 + 7.5 + 20.0
    assert bn1['spent_seconds'] == 700.0 + 20.0
    text = format_costs(costs, jobs=2, machine='m')
    rows = {line.split(' | ')[0].strip('| '): line for line in text.splitlines()
            if line.startswith('| BN@')}
    assert rows['BN@1'].split(' | ')[3] == '5 (5–5)'  # 327.5 s
    assert rows['BN@1'].split(' | ')[5] == '2 (1)'   # two sessions: one resume
    assert rows['BN@8'].split(' | ')[6] == '9 |'     # 260 s x 2 threads
    core_hours = (720.0 * 1 + 260.0 * 2) / 3600
    assert f'Core-hours spent on these runs: {core_hours:.1f}.' in text
    assert 'up to 2 runs at a time' in text and 'on m,' in text


def test_cli_writes_the_costs_and_the_docs_block_renders_them(tmp_path):
    out = tmp_path / 'sweep'
    _resumed_run(out / 'runs' / 'BN@1_seed0' / 'train')
    (out / 'records').mkdir()
    record = dict(arm='BN@1', seed=0, threads=1, test_seconds=20.0, machine='x86_64, 2 CPUs',
                  metrics={'coco/bbox_mAP': 0.4})
    (out / 'records' / 'BN@1_seed0.json').write_text(json.dumps(record))
    root = tmp_path / 'repo'
    (root / 'docs' / 'evidence').mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'norm_sweep.py'), '--out', str(out),
         '--report-only', '--cost', '--jobs', '2', '--report',
         str(root / 'docs' / 'evidence' / 'setting')], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((root / 'docs' / 'evidence' / 'setting_cost.json').read_text())
    assert saved['jobs'] == 2 and saved['machine'] == 'x86_64, 2 CPUs'
    assert saved['costs'][0]['run_seconds'] == 327.5
    block = docs_blocks.render('cost-setting', str(root))
    assert block == format_costs(saved['costs'], 2, 'x86_64, 2 CPUs')
    assert block in (root / 'docs' / 'evidence' / 'setting_cost.md').read_text()


def test_cost_needs_the_run_directory(tmp_path):
    path = tmp_path / 'in.json'
    path.write_text(json.dumps(dict(records=[])))
    done = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'norm_sweep.py'), '--from-json',
         str(path), '--cost'], capture_output=True, text=True)
    assert done.returncode == 2 and '--cost reads the run logs under --out' in done.stderr


def test_a_record_keeps_the_cost_of_every_session_and_imported_records_are_priced(
        tmp_path, monkeypatch):
    """The runner stores the logs' cost in the record: a resumed run's record prices both
    sessions, and its cost survives where the run directory does not (records imported from
    a committed report JSON on another machine)."""
    from mmnorm_plugin.analysis.norm_sweep import runner
    from mmnorm_plugin.analysis.norm_sweep.arms import Arm, parse_norm
    config = osp.join(ROOT, 'configs', 'norm_sweep',
                      'faster-rcnn_r18-w16_fpn_bn_scratch_photo-digits.py')

    def fake_run(cmd, log_path, env, nice):
        open(log_path, 'a').close()  # the real one appends the process's output there
        work_dir = cmd[cmd.index('--work-dir') + 1]
        if cmd[1].endswith('train.py'):  # a killed session and the resume that finished
            _resumed_run(tmp_path / work_dir)
            (tmp_path / work_dir / 'epoch_2.pth').write_bytes(b'x')
            (tmp_path / work_dir / 'last_checkpoint').write_text(
                str(tmp_path / work_dir / 'epoch_2.pth'))
            return 0, 300.0, 1.0  # the last process's wall time only
        (tmp_path / work_dir / 'stamp').mkdir(parents=True)
        (tmp_path / work_dir / 'stamp' / 'stamp.json').write_text(
            json.dumps({'coco/bbox_mAP': 0.4}) + '\n')
        return 0, 20.0, 1.0

    monkeypatch.setattr(runner, '_run', fake_run)
    monkeypatch.setattr(runner, 'ensure_dataset', lambda cfg: None)
    monkeypatch.chdir(tmp_path)
    record = runner.run_arm(config, Arm('BN', parse_norm('BN')[1], 1), 0, 'sweep')
    assert record['train_seconds'] == 300.0
    assert record['cost']['sessions'] == 2 and record['cost']['session_seconds'] == 700.0
    assert record['cost']['iteration_seconds'] == 300.0
    assert sweep_costs(str(tmp_path / 'elsewhere'), [record])[0]['spent_seconds'] == 720.0


def test_a_record_with_a_malformed_cost_is_refused():
    from mmnorm_plugin.analysis.norm_sweep.records import RecordError, check_record
    good = dict(sessions=1, iterations=10, iteration_seconds=1.5, evaluations=0,
                evaluation_seconds=None, session_seconds=2.0)
    record = dict(arm='BN@1', seed=0, metrics={'coco/bbox_mAP': 0.4}, cost=good)
    assert check_record(record) is record
    for bad in ('x', dict(good, iterations=-1), dict(good, session_seconds=float('nan')),
                dict(good, sessions=None), {k: v for k, v in good.items() if k != 'iterations'},
                dict(good, extra=1)):
        with pytest.raises(RecordError, match='cost is not'):
            check_record(dict(record, cost=bad))
