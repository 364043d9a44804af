"""The small-batch study: it trains, reports, plots, and tells a broken norm from a good one."""
import io
import json
import os.path as osp

import pytest
import torch

pytest.importorskip('sklearn')

from mmnorm_plugin.analysis import small_batch_study as study  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


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


def test_radial_free_gradient_is_orthogonal_to_every_filter_and_keeps_the_rest():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    g = torch.randn(4, 3, 3, 3)
    w.grad = g.clone()
    study._remove_radial_component([w])
    per_filter = (w.grad * w.detach()).flatten(1).sum(1)
    torch.testing.assert_close(per_filter, torch.zeros(4), atol=1e-5, rtol=0)
    # only the radial part went: what is left plus it is the original gradient
    flat = w.detach().flatten(1)
    coef = (g.flatten(1) * flat).sum(1, keepdim=True) / flat.square().sum(1, keepdim=True)
    radial = coef * flat
    torch.testing.assert_close(w.grad.flatten(1) + radial, g.flatten(1))


def test_arm_training_options_reach_training_not_the_network(data):
    # `epochs` and `radial_free_grad` are the arm's training options: popped before the net is
    # built (SmallConvNet would refuse them) and applied (the step count follows `epochs`)
    method = dict(norm_cfg=dict(type='CBN', buffer_num=3, grad_through_compensation=False),
                  epochs=16 / 384, radial_free_grad=True)
    steps = []
    record = study.train_and_evaluate(method, 8, 0, data, epochs=4,
                                      progress=lambda: steps.append(1))
    assert record.epochs == pytest.approx(16 / 384) and len(steps) == 2
    assert record.extra == dict(radial_free_grad=True)  # the record says how it was trained
    assert method['radial_free_grad'] is True  # the caller's dict is not consumed


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
    # the sample std (n - 1): the population std would understate the spread of few seeds
    assert mean == pytest.approx(0.91) and std == pytest.approx(0.02 / 2 ** 0.5) and n == 2
    table = study.format_table(records)
    assert '| BN | 91.0 ± 1.4 | 98.5 ± 0.7 |' in table
    path = study.plot_study(records, str(tmp_path / 'study.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def _cli():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'small_batch_study_cli', osp.join(ROOT, 'tools', 'analysis', 'small_batch_study.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_cli_writes_json_table_and_png_and_merges(tmp_path):
    cli = _cli()
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


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_one_line_per_arm_in_a_log_and_a_bar_on_a_terminal(data):
    methods = {'BN': dict(norm_cfg=dict(type='BN'))}
    log = io.StringIO()  # a file or a pipe: CI logs, `tee`, nohup
    study.run_study(methods, batch_sizes=(32, 64), seeds=(0, ), epochs=0.1, data=data,
                    stream=log)
    lines = log.getvalue().splitlines()
    assert '\r' not in log.getvalue()
    assert len(lines) == 2 and lines[0].startswith('[1/2] BN, batch 32, seed 0: accuracy ')
    terminal = _Terminal()
    study.run_study(methods, batch_sizes=(32, ), seeds=(0, ), epochs=0.1, data=data,
                    stream=terminal)
    assert '\r' in terminal.getvalue()  # the redrawn bar, where it belongs
    quiet = io.StringIO()
    study.run_study(methods, batch_sizes=(32, ), seeds=(0, ), epochs=0.1, data=data,
                    progress=False, stream=quiet)
    assert quiet.getvalue() == ''


def test_single_seed_cells_say_n_1_instead_of_a_zero_spread():
    records = [study.StudyRecord('BN', 1, 0, 0.943, 4, 0.1 / 32, 1.0, 0.1),
               study.StudyRecord('BN', 32, 0, 0.98, 4, 0.1, 1.0, 0.1),
               study.StudyRecord('BN', 32, 1, 0.99, 4, 0.1, 1.0, 0.1)]
    table = study.format_table(records)
    assert '| BN | 94.3 (n=1) | 98.5 ± 0.7 |' in table  # sample std of 0.98, 0.99
    assert '± 0.0' not in table


def test_every_arm_of_the_study_has_its_own_look_and_defaults_are_on_top():
    from mmnorm_plugin.analysis.plot_style import arm_styles
    names = list(dict.fromkeys(r['method'] for r in json.load(
        open(osp.join(ROOT, 'docs', 'small_batch_study.json')))))
    styles = arm_styles(names)
    looks = {(str(s['color']), s['marker'], str(s['linestyle']), s['filled'])
             for s in styles.values()}
    assert len(looks) == len(names)  # no two arms drawn alike
    # without colour: a variant differs from its default in line style and marker fill
    assert styles['CBN (official grad)']['marker'] == styles['CBN']['marker']
    assert styles['CBN (official grad)']['linestyle'] != styles['CBN']['linestyle']
    assert styles['CBN (official grad)']['linestyle'] != \
        styles['CBN (official running stats)']['linestyle']
    defaults = [s['zorder'] for n, s in styles.items() if '(' not in n]
    variants = [s['zorder'] for n, s in styles.items() if '(' in n]
    assert min(defaults) > max(variants)
    # the default methods alone: distinct markers, so a grey-scale print still tells them apart
    markers = [s['marker'] for n, s in styles.items() if '(' not in n]
    assert len(set(markers)) == len(markers)


def test_the_figure_draws_every_arm_with_its_style(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, 'close', figures.append)  # keep the figure to inspect it
    records = [study.StudyRecord(m, b, 0, 0.9, 4, 0.1, 1.0, 0.1)
               for m in ('BN', 'CBN', 'CBN (official grad)') for b in (1, 32)]
    study.plot_study(records, str(tmp_path / 'p.png'))
    # errorbar() returns a container per arm; its first line is the data line
    lines = {c.get_label(): c.lines[0] for c in figures[0].axes[0].containers}
    assert set(lines) == {'BN', 'CBN', 'CBN (official grad)'}
    assert lines['CBN'].get_zorder() > lines['CBN (official grad)'].get_zorder()
    assert lines['CBN (official grad)'].get_markerfacecolor() == 'white'
    # equal accuracies at the same batch size are spread apart, not drawn on top of each other
    xs = {name: tuple(line.get_xdata()) for name, line in lines.items()}
    assert len(set(xs.values())) == 3


def test_paired_table_pairs_by_seed_and_marks_only_intervals_excluding_zero():
    rec = lambda m, b, s, a: study.StudyRecord(m, b, s, a, 4, 0.1, 1.0, 0.1)  # noqa: E731
    records = ([rec('BN', 1, s, 0.90 + 0.01 * s) for s in range(5)]
               + [rec('good', 1, s, 0.95 + 0.01 * s + 0.001 * (s == 1)) for s in range(5)]
               + [rec('same', 1, s, 0.90 + 0.01 * s + (0.02, -0.02, 0.0, 0.01, -0.01)[s])
                  for s in range(5)])
    # 3 seeds are a pilot: the same +5 points on every seed claims nothing
    pilot = study.format_paired_table([r for r in records if r.seed < 3], 'BN')
    assert '| good | +5.0 [' in pilot and '*' not in pilot
    table = study.format_paired_table(records, 'BN')
    lines = table.splitlines()
    assert lines[0] == '| paired Δ vs BN [95 % CI] | batch 1 |'
    good = next(line for line in lines if line.startswith('| good |'))
    same = next(line for line in lines if line.startswith('| same |'))
    # +5 points on every seed: a tight interval, excluding 0; the other averages 0
    assert good.startswith('| good | +5.0 [') and good.endswith('* |')
    assert same.startswith('| same | +0.0 [') and not same.endswith('* |')
    with pytest.raises(ValueError, match='baseline'):
        study.format_paired_table(records, 'GN')


def test_cli_records_name_the_commit_and_the_command_that_reruns_them(tmp_path, git_head):
    """Every row of study.json says which code trained it and how to rerun it, and a merge
    (--from-json) keeps each row's own, not the merging command's."""
    import shlex
    cli = _cli()
    argv = ['--methods', 'BN', '--batch-sizes', '32', '--seeds', '0', '--epochs', '0.05',
            '--out-dir', str(tmp_path / 'a')]
    cli.main(argv)
    [row] = json.loads((tmp_path / 'a' / 'study.json').read_text())
    assert row['commit'] == git_head and isinstance(row['dirty'], bool)
    assert row['versions']['torch'] == torch.__version__
    assert shlex.split(row['command']) == ['python', 'tools/analysis/small_batch_study.py', *argv]
    cli.main(['--from-json', str(tmp_path / 'a' / 'study.json'), '--out-dir',
              str(tmp_path / 'b')])
    assert json.loads((tmp_path / 'b' / 'study.json').read_text()) == [row]


def test_records_written_before_provenance_still_load_report_and_round_trip(tmp_path):
    """docs/ holds study.json files without commit/command: they load, tabulate (paired too)
    and are rewritten exactly as they were, with no provenance invented for them."""
    path = osp.join(ROOT, 'docs', 'cbn_gradient_control', 'study.json')
    rows = json.load(open(path))
    assert 'commit' not in rows[0]
    records = [study.StudyRecord.from_dict(r) for r in rows]
    assert [r.as_dict() for r in records] == rows
    _cli().main(['--from-json', path, '--paired', 'CBN official grad', '--out-dir',
                 str(tmp_path)])
    assert json.loads((tmp_path / 'study.json').read_text()) == rows
    assert '| paired Δ vs CBN official grad' in (tmp_path / 'study.md').read_text()
