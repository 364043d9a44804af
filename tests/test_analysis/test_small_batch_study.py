"""The small-batch study: it trains, reports, plots, and tells a broken norm from a good one."""
import json
import os.path as osp

import pytest
import torch

pytest.importorskip('sklearn')

from mmnorm_plugin.analysis import small_batch_study as study  # noqa: E402


@pytest.fixture(scope='module')
def data():
    train_x, train_y, test_x, test_y = study.load_digits_split()
    return train_x[:384], train_y[:384], test_x, test_y


def test_digits_split_is_fixed_stratified_and_standardized():
    a = study.load_digits_split()
    b = study.load_digits_split()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    train_x, train_y, test_x, test_y = a
    assert train_x.shape[1:] == (1, 8, 8) and len(train_x) + len(test_x) == 1797
    assert abs(train_x.mean().item()) < 1e-4 and abs(train_x.std().item() - 1) < 1e-3
    counts = torch.bincount(test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20 % of each class


@pytest.mark.parametrize('name', list(study.METHODS))
def test_every_method_builds_and_steps_at_batch_1(name, data):
    record = study.train_and_evaluate(study.METHODS[name], 1, 0, data, epochs=8 / 384, name=name)
    assert record.method == name and 0 <= record.accuracy <= 1
    assert record.peak_lr == pytest.approx(0.1 / 32)


def test_xbn_arm_puts_group_norm_after_every_other_conv():
    net = study.SmallConvNet(**study.METHODS['XBN'])
    norms = [type(m).__name__ for m in net.features if not isinstance(m, (torch.nn.Conv2d,
                                                                           torch.nn.ReLU))]
    assert norms == ['BatchNorm2d', 'GroupNorm', 'BatchNorm2d', 'GroupNorm', 'BatchNorm2d']


def test_study_detects_a_broken_norm(data):
    """BN whose running statistics never update (momentum 0) normalizes differently in eval
    than in training: the study must rank it far below BN."""
    methods = {'BN': dict(norm_cfg=dict(type='BN')),
               'stale BN': dict(norm_cfg=dict(type='BN', momentum=0.0))}
    records = study.run_study(methods, batch_sizes=(8, ), seeds=(0, ), epochs=2, data=data,
                              progress=False)
    acc = {r.method: r.accuracy for r in records}
    assert acc['BN'] > 0.8
    assert acc['stale BN'] < acc['BN'] - 0.3


def test_summary_table_and_plot(tmp_path):
    records = [
        study.StudyRecord('BN', b, s, acc, 4, 0.1 * b / 32, 1.0, 0.1)
        for b, accs in ((1, (0.90, 0.92)), (32, (0.98, 0.99))) for s, acc in enumerate(accs)
    ]
    summary = study.summarize(records)
    mean, std, n = summary['BN'][1]
    assert mean == pytest.approx(0.91) and std == pytest.approx(0.01) and n == 2
    table = study.format_table(records)
    assert '| BN | 91.0 ± 1.0 | 98.5 ± 0.5 |' in table
    path = study.plot_study(records, str(tmp_path / 'study.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_cli_writes_json_table_and_png_and_merges(tmp_path):
    import importlib.util
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'analysis',
                    'small_batch_study.py')
    spec = importlib.util.spec_from_file_location('small_batch_study_cli', path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / 'a'
    cli.main(['--methods', 'BN', '--norm', 'GN G=4={"norm_cfg": {"type": "GN", "num_groups": 4}}',
              '--batch-sizes', '32', '--seeds', '0', '--epochs', '0.05', '--out-dir', str(out)])
    records = json.loads((out / 'study.json').read_text())
    assert [r['method'] for r in records] == ['BN', 'GN G=4']
    assert (out / 'study.png').stat().st_size > 1000 and 'GN G=4' in (out / 'study.md').read_text()
    merged = tmp_path / 'merged'
    cli.main(['--from-json', str(out / 'study.json'), str(out / 'study.json'), '--out-dir',
              str(merged)])
    assert len(json.loads((merged / 'study.json').read_text())) == 4
    with pytest.raises(SystemExit, match='unknown method'):
        cli.main(['--methods', 'NoSuchNorm', '--out-dir', str(out)])
