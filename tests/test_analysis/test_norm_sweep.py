"""norm_sweep: arm configs from any mmdet config, the report, and a resumable end-to-end sweep."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmnorm_plugin.analysis.norm_sweep import (PARTS, Arm, analyze, arm_config,
                                               format_report, load_records, norm_sites,
                                               parse_norm, write_report)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STUDY = osp.join(ROOT, 'configs', 'norm_sweep',
                 'faster-rcnn_r18-w16_fpn_bn_scratch_photo-digits.py')


def _arm(text, batch, groups=None):
    name, spec = parse_norm(text, groups)
    return Arm(name, spec, batch)


def test_every_norm_site_of_the_chosen_parts_is_swapped_and_nothing_else():
    cfg, options = arm_config(STUDY, _arm('CBN', 1), seed=3)
    for path in ('backbone', 'neck', 'roi_head.bbox_head'):
        assert cfg.model[path.split('.')[0]] is not None
    assert cfg.model.backbone.norm_cfg.type == 'CBN' and not cfg.model.backbone.norm_eval
    assert cfg.model.neck.norm_cfg.type == 'CBN'
    assert cfg.model.roi_head.bbox_head.norm_cfg.type == 'CBN'
    assert cfg.train_dataloader.batch_size == 1 and cfg.randomness.seed == 3
    # the LR is written for 8 images per batch; scaled once, never twice
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.08 / 8)
    assert cfg.auto_scale_lr.enable is False
    base = Config.fromfile(STUDY)
    changed = {k for k in options if not k.startswith(('model.', 'randomness',
                                                       'train_dataloader.batch_size',
                                                       'optim_wrapper.optimizer.lr',
                                                       'auto_scale_lr', 'train_cfg'))}
    assert not changed
    assert cfg.model.rpn_head == base.model.rpn_head  # no norm there: untouched


def test_parts_mabn_conv_and_groups():
    cfg, _ = arm_config(STUDY, _arm('MABN', 2), seed=0, parts=['neck', 'heads'])
    assert cfg.model.backbone.norm_cfg.type == 'BN'  # not a chosen part
    assert cfg.model.neck.conv_cfg.type == 'CenConv2d'
    assert cfg.model.roi_head.bbox_head.conv_cfg.type == 'CenConv2d'
    cfg, _ = arm_config(STUDY, _arm('GN', 2, groups=8), seed=0)
    assert cfg.model.neck.norm_cfg == dict(type='GN', num_groups=8, requires_grad=True)


def test_xbn_and_frozen_bn_arms():
    cfg, _ = arm_config(STUDY, _arm('XBN', 1, groups=8), seed=0)
    assert cfg.model.backbone.type == 'XBNResNet'
    assert cfg.model.backbone.norm_cfg.type == 'BN' and cfg.model.neck.norm_cfg.type == 'GN'
    cfg, _ = arm_config(STUDY, _arm('FrozenBN', 2), seed=0)
    assert cfg.model.backbone.norm_cfg.requires_grad is False and cfg.model.backbone.norm_eval
    assert cfg.model.neck.norm_cfg is None and cfg.model.roi_head.bbox_head.norm_cfg is None


def test_an_arm_can_add_hooks():
    name, spec = parse_norm('BGNp={"norm_cfg": {"type": "BGN", "num_groups": 8}, '
                            '"custom_hooks": [{"type": "PreciseNormHook", "num_batches": 50}]}')
    cfg, options = arm_config(STUDY, Arm(name, spec, 1), seed=0)
    assert cfg.custom_hooks[-1] == dict(type='PreciseNormHook', num_batches=50)
    assert options['custom_hooks'][-1]['type'] == 'PreciseNormHook'


def test_a_config_without_randomness_gets_the_seed(tmp_path):
    # mmdet's own configs never set `randomness`: the seed must still reach the arm (as
    # mmengine's --cfg-options would create it), or every arm of a user config fails
    config = tmp_path / 'user.py'
    config.write_text(_USER_CONFIG.format(root=ROOT))
    assert 'randomness' not in Config.fromfile(str(config))
    cfg, options = arm_config(str(config), _arm('GN', 2, groups=8), seed=4, parts=['backbone'])
    assert cfg.randomness == dict(seed=4) and options['randomness.seed'] == 4
    assert cfg.model.backbone.norm_cfg.type == 'GN'


def test_a_part_without_norm_is_refused_with_the_fix():
    cfg = Config.fromfile(STUDY)
    del cfg.model.roi_head.bbox_head['norm_cfg']
    path = osp.join(os.environ.get('TMPDIR', '/tmp'), 'no_head_norm.py')
    cfg.dump(path)
    with pytest.raises(ValueError, match='heads has no norm_cfg'):
        arm_config(path, _arm('BN', 1), seed=0)
    assert norm_sites(cfg.model, ['heads'])['heads'] == []


def test_unknown_norm_and_bad_spec():
    with pytest.raises(ValueError, match="did you mean 'CBN'"):
        parse_norm('CNB')
    with pytest.raises(ValueError, match='not JSON'):
        parse_norm('X={norm_cfg: 1}')
    name, spec = parse_norm('Mine={"norm_cfg": {"type": "GN", "num_groups": 4}}')
    assert name == 'Mine' and spec['norm_cfg']['num_groups'] == 4


def _records(shift, seeds=range(5)):
    base = [0.40, 0.45, 0.38, 0.50, 0.42]
    jitter = [0.010, -0.004, 0.006, -0.008, 0.002]
    out = []
    for s in seeds:
        out.append(dict(arm='BN@1', seed=s, metrics={'coco/bbox_mAP': base[s]}))
        out.append(dict(arm='Broken@1', seed=s,
                        metrics={'coco/bbox_mAP': base[s] - shift + jitter[s]}))
        out.append(dict(arm='BN@8', seed=s, metrics={'coco/bbox_mAP': base[s] + 0.05}))
    return out


def test_a_broken_norm_is_reported_worse_with_an_interval_excluding_zero(tmp_path):
    analysis = analyze(_records(shift=0.10), baseline='BN', reference='BN@8')
    row = {r['arm']: r for r in analysis['rows']}['Broken@1']
    assert row['vs_baseline']['mean'] == pytest.approx(-0.10, abs=0.01)
    assert row['vs_baseline']['ci'][1] < 0 and row['vs_baseline']['excludes_zero']
    # seed-to-seed spread of an arm (std 0.047) is far larger than the paired spread: the
    # pairing is what makes the difference visible
    assert row['std'] > 4 * row['vs_baseline']['sd']
    text = format_report(analysis)
    assert '| Broken@1 |' in text and '*' in text.split('| Broken@1 |')[1].splitlines()[0]
    out = write_report(_records(0.10), str(tmp_path / 'rep'), 'BN', 'BN@8', 'test')
    assert (tmp_path / 'rep.png').stat().st_size > 0
    assert load_records(str(tmp_path / 'rep.json')) == _records(0.10)
    assert out['analysis']['rows']


def test_committed_records_are_imported_once_and_verbatim(tmp_path):
    from mmnorm_plugin.analysis.norm_sweep import import_records
    records = _records(0.1, seeds=range(2))
    assert import_records(records, str(tmp_path)) == 6
    assert import_records(records, str(tmp_path)) == 0
    assert sorted(load_records(str(tmp_path)), key=lambda r: (r['arm'], r['seed'])) == \
        sorted(records, key=lambda r: (r['arm'], r['seed']))


def test_no_difference_is_not_claimed():
    analysis = analyze(_records(shift=0.0), baseline='BN')
    row = {r['arm']: r for r in analysis['rows']}['Broken@1']
    assert not row['vs_baseline']['excludes_zero']


def test_a_variant_is_compared_with_the_arm_it_varies_across_sources(tmp_path):
    """A study of one option: Variant@1 against Broken@1 (not BN), with Broken@1's records
    taken from another source (a committed grid) and the commits named under the table."""
    from mmnorm_plugin.analysis.norm_sweep import merge_records, parse_versus
    grid = [dict(r, commit='a' * 40) for r in _records(shift=0.10)]
    variants = [dict(arm='Variant@1', seed=r['seed'], commit='b' * 40,
                     metrics={'coco/bbox_mAP': r['metrics']['coco/bbox_mAP'] + 0.03})
                for r in grid if r['arm'] == 'Broken@1']
    merged = merge_records(variants, grid, ['Broken@1', 'BN@1'])
    assert sorted({r['arm'] for r in merged}) == ['BN@1', 'Broken@1', 'Variant@1']
    # an arm-seed the study has itself is never replaced by the other source's
    own = [dict(arm='BN@1', seed=0, commit='c' * 40, metrics={'coco/bbox_mAP': 0.0})]
    assert [r['commit'] for r in merge_records(own, grid, ['BN@1'])
            if r['seed'] == 0] == ['c' * 40]
    with pytest.raises(ValueError, match='BN@8x'):
        merge_records(variants, grid, ['BN@8x'])
    analysis = analyze(merged, baseline='BN', reference='BN@1',
                       versus=parse_versus(['Variant=Broken']))
    rows = {r['arm']: r for r in analysis['rows']}
    assert rows['Variant@1']['vs_baseline']['arm'] == 'Broken@1'
    assert rows['Variant@1']['vs_baseline']['mean'] == pytest.approx(0.03)
    assert rows['Variant@1']['vs_baseline']['excludes_zero']
    assert rows['Variant@1']['vs_reference']['mean'] == pytest.approx(-0.07, abs=0.01)
    assert rows['Broken@1']['vs_baseline']['arm'] == 'BN@1'  # not in versus: the baseline
    text = format_report(analysis)
    assert '+3.0 [+3.0, +3.0] * vs Broken@1' in text
    assert 'commit aaaaaaa: ' in text and 'commit bbbbbbb: Variant@1' in text
    write_report(merged, str(tmp_path / 'v'), 'BN', 'BN@1', 'variants',
                 versus={'Variant': 'Broken'})
    assert (tmp_path / 'v.png').stat().st_size > 0
    for bad in ('Variant', 'Variant=', 'Variant@1=Broken@1'):
        with pytest.raises(ValueError, match='VARIANT=NORM'):
            parse_versus([bad])


def test_a_record_made_with_another_spec_is_refused_before_anything_runs(tmp_path,
                                                                        monkeypatch):
    """Resuming after an arm's spec was edited under the same name would pair old results
    with the new arm: refused, naming the difference; a matching record is skipped."""
    from mmnorm_plugin.analysis import norm_sweep
    from mmnorm_plugin.analysis.norm_sweep import runner
    ran = []
    monkeypatch.setattr(runner, 'run_arm', lambda *a, **k: ran.append(a) or dict(
        train_seconds=1.0, test_seconds=1.0, metrics={}))
    old = _arm('CBNx={"norm_cfg": {"type": "CBN", "running_stats": "batch"}}', 1)
    (tmp_path / 'records').mkdir()
    record = dict(arm='CBNx@1', seed=0, spec=old.spec, parts=list(PARTS), cfg_options={},
                  config=osp.relpath(STUDY, ROOT), metrics={'coco/bbox_mAP': 0.1})
    (tmp_path / 'records' / 'CBNx@1_seed0.json').write_text(json.dumps(record))
    new = _arm('CBNx={"norm_cfg": {"type": "CBN", "running_stats": "window"}}', 1)
    with pytest.raises(ValueError, match="CBNx@1 seed 0: spec .*'batch'.* recorded"):
        norm_sweep.run_sweep(STUDY, [new], [0, 1], str(tmp_path))
    with pytest.raises(ValueError, match='cfg_options'):
        norm_sweep.run_sweep(STUDY, [old], [0], str(tmp_path), cfg_options={'a': 1})
    assert not ran
    norm_sweep.run_sweep(STUDY, [old], [0, 1], str(tmp_path))
    assert [(a[1].name, a[2]) for a in ran] == [('CBNx@1', 1)]  # seed 0 was done


def test_cli_report_of_a_variant_study_from_committed_json(tmp_path):
    """tools/analysis/norm_sweep.py --from-json ... --with ... --versus ...: the table pairs
    the variant with its default from the other source; bad report options are refused."""
    grid = [dict(r, commit='a' * 40) for r in _records(shift=0.10)]
    variants = [dict(arm='Variant@1', seed=r['seed'], commit='b' * 40,
                     metrics={'coco/bbox_mAP': r['metrics']['coco/bbox_mAP'] - 0.02})
                for r in grid if r['arm'] == 'Broken@1']
    write_report(grid, str(tmp_path / 'grid'), 'BN', 'BN@8')
    write_report(variants, str(tmp_path / 'var'), None)
    tool = osp.join(ROOT, 'tools', 'analysis', 'norm_sweep.py')
    run = subprocess.run(
        [sys.executable, tool, '--from-json', str(tmp_path / 'var.json'), '--baseline', '',
         '--with', str(tmp_path / 'grid.json'), 'Broken@1', '--versus', 'Variant=Broken',
         '--report', str(tmp_path / 'out')], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert '| Variant@1 |' in run.stdout and '-2.0 [-2.0, -2.0] * vs Broken@1' in run.stdout
    assert len(json.load(open(tmp_path / 'out.json'))['records']) == 10
    for bad, msg in ((['--versus', 'Variant'], 'VARIANT=NORM'),
                     (['--with', str(tmp_path / 'nope.json')], 'no such sweep')):
        run = subprocess.run([sys.executable, tool, '--from-json', str(tmp_path / 'var.json'),
                              '--report', str(tmp_path / 'bad')] + bad,
                             capture_output=True, text=True, cwd=ROOT)
        assert run.returncode != 0 and msg in run.stderr
        assert not (tmp_path / 'bad.md').exists()


# An unmodified mmdet model config (RetinaNet from mmdet's own bases, ResNet-18) pointed at the
# tiny set through the project's dataset and runtime bases; the head opts into the norm swap.
_USER_CONFIG = """
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py',
          '{root}/configs/_base_/datasets/tiny_coco_detection.py',
          '{root}/configs/_base_/tiny_runtime.py', '{root}/configs/_base_/plugin.py']
model = dict(
    backbone=dict(depth=18, init_cfg=None, norm_eval=False, frozen_stages=-1),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(num_classes=3, in_channels=32, feat_channels=32, stacked_convs=1,
                   norm_cfg=None))
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
"""


@pytest.mark.slow
def test_sweep_runs_an_mmdet_config_resumes_after_a_kill_and_reports(tmp_path):
    from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco
    make_tiny_coco(str(tmp_path / 'data' / 'tiny_coco'), num_train=4, num_val=3)
    config = tmp_path / 'retinanet_r18_tiny.py'
    config.write_text(_USER_CONFIG.format(root=ROOT))
    out = tmp_path / 'sweep'
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'analysis', 'norm_sweep.py'), str(config),
           '--norms', 'BN', 'GN', 'CBN', '--groups', '8', '--batch', '1', '2', '--seeds', '0',
           '1', '--jobs', '2', '--out', str(out)]
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    # kill the sweep once its first record lands; rerun: finished arm-seeds are not redone
    log = open(tmp_path / 'first_run.log', 'w')
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    records = out / 'records'
    import time
    deadline = time.time() + 900
    while time.time() < deadline and not (records.exists() and any(records.iterdir())):
        # a sweep whose arms all fail exits early: say so instead of waiting for the deadline
        assert proc.poll() is None, (tmp_path / 'first_run.log').read_text()[-3000:]
        time.sleep(1)
    os.killpg(proc.pid, 9)
    proc.wait()
    log.close()
    first = {p.name: p.stat().st_mtime_ns for p in records.glob('*.json')}
    assert first, 'no record before the kill'
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f'{len(first)} already recorded' in done.stdout + done.stderr
    after = {p.name: p.stat().st_mtime_ns for p in records.glob('*.json')}
    assert len(after) == 12 and all(after[k] == v for k, v in first.items())
    rec = json.loads((records / 'CBN@2_seed1.json').read_text())
    assert rec['options']['model.backbone.norm_cfg']['type'] == 'CBN'
    assert rec['options']['model.bbox_head.norm_cfg']['type'] == 'CBN'
    assert rec['images_per_batch'] == 2 and rec['seed'] == 1 and rec['commit']
    assert rec['lr'] == pytest.approx(0.02 * 2 / 2) and rec['peak_memory_mib'] > 0
    assert 'coco/bbox_mAP' in rec['metrics'] and rec['versions']['mmdet'] == '3.3.0'
    for ext in ('md', 'json', 'png'):
        assert (out / f'sweep.{ext}').stat().st_size > 0
    table = (out / 'sweep.md').read_text()
    assert '| CBN@1 |' in table and '(n=2)' in table


def _cli():
    """tools/analysis/norm_sweep.py as a module (the README editing lives in the tool)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'norm_sweep_cli', osp.join(ROOT, 'tools', 'analysis', 'norm_sweep.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_block_is_replaced_in_place(tmp_path):
    update_readme = _cli().update_readme
    readme = tmp_path / 'README.md'
    readme.write_text('intro\n<!-- norm_sweep:x -->\nold\n<!-- /norm_sweep:x -->\nrest\n')
    update_readme(str(readme), 'x', '| new |')
    assert readme.read_text() == 'intro\n<!-- norm_sweep:x -->\n| new |\n<!-- /norm_sweep:x -->\nrest\n'
    with pytest.raises(ValueError, match='norm_sweep:y'):
        update_readme(str(readme), 'y', 'z')


def test_an_empty_detection_set_scores_zero_for_every_evaluated_kind():
    # mmdet's CocoMetric returns {} when no box survives; the record must still pair (AP = 0)
    from mmnorm_plugin.analysis.norm_sweep.runner import _zero_metrics
    cfg = Config(dict(test_evaluator=dict(type='CocoMetric', metric=['bbox', 'segm'])))
    zero = _zero_metrics(cfg)
    assert zero['coco/bbox_mAP'] == 0.0 and zero['coco/segm_mAP_75'] == 0.0 and len(zero) == 12
    cfg = Config(dict(test_evaluator=[dict(type='CocoMetric')]))
    assert set(_zero_metrics(cfg)) == {f'coco/bbox_mAP{s}' for s in
                                       ('', '_50', '_75', '_s', '_m', '_l')}


def test_provenance_names_the_checkout_and_a_command_rerun_from_the_root(git_head):
    """norm_sweep's records keep their keys (no ``command``: they hold the config, spec and
    options that rerun them); the studies add the command, paths in the checkout relative."""
    import shlex

    from mmnorm_plugin.analysis import norm_sweep, provenance
    assert norm_sweep.provenance is provenance.provenance  # importable from norm_sweep as before
    record = norm_sweep.provenance()
    assert record['commit'] == git_head and isinstance(record['dirty'], bool)
    assert 'command' not in record and set(record) < set(provenance.PROVENANCE_KEYS)
    assert provenance.provenance('python x.py')['command'] == 'python x.py'
    command = provenance.command_line(osp.join(ROOT, 'tools', 'analysis', 'norm_sweep.py'),
                                      ['--out', osp.join(ROOT, 'work_dirs', 'a'), 'BN=a b',
                                       '/elsewhere'])
    assert shlex.split(command) == ['python', 'tools/analysis/norm_sweep.py', '--out',
                                    'work_dirs/a', 'BN=a b', '/elsewhere']


def test_provenance_is_taken_at_the_start_and_a_changed_checkout_is_refused(tmp_path,
                                                                            monkeypatch):
    """A run resumed on other code must not be labelled with the code it ended on."""
    from mmnorm_plugin.analysis.norm_sweep import runner as norm_sweep
    state = dict(commit='a' * 40, dirty=False, diff_sha256=None)
    monkeypatch.setattr(norm_sweep, 'provenance',
                        lambda with_diff=False: dict(state, versions={}, python='3',
                                                     machine='m'))
    first = norm_sweep._start_provenance(str(tmp_path), 'BN@1 seed 0')
    assert first['commit'] == 'a' * 40 and 'started' in first
    state['commit'] = 'b' * 40  # the checkout moved on: the start is what the record keeps
    with pytest.raises(RuntimeError, match='started at commit aaaaaaa.*now at bbbbbbb'):
        norm_sweep._start_provenance(str(tmp_path), 'BN@1 seed 0')
    state.update(commit='a' * 40, dirty=True, diff_sha256='d' * 64)  # same commit, new diff
    with pytest.raises(RuntimeError, match=r'now at aaaaaaa \(dirty\)'):
        norm_sweep._start_provenance(str(tmp_path), 'BN@1 seed 0')
    state.update(dirty=False, diff_sha256=None)
    again = norm_sweep._start_provenance(str(tmp_path), 'BN@1 seed 0')
    assert again == first  # the start's, timestamp included


def test_a_dirty_tree_stores_its_diff_and_hash(tmp_path):
    import hashlib
    from mmnorm_plugin.analysis import provenance
    subprocess.run(['git', 'init', '-q', str(tmp_path)], check=True)
    (tmp_path / 'f.txt').write_text('one\n')
    git = ['git', '-C', str(tmp_path), '-c', 'user.name=t', '-c', 'user.email=t@t']
    subprocess.run(git + ['add', 'f.txt'], check=True)
    subprocess.run(git + ['commit', '-qm', 'x'], check=True)
    root = provenance.ROOT
    try:
        provenance.ROOT = str(tmp_path)
        clean = provenance.provenance(with_diff=True)
        assert clean['dirty'] is False and clean['diff_sha256'] is None and 'diff' not in clean
        (tmp_path / 'f.txt').write_text('two\n')
        dirty = provenance.provenance(with_diff=True)
    finally:
        provenance.ROOT = root
    assert dirty['dirty'] is True and '+two' in dirty['diff']
    assert dirty['diff_sha256'] == hashlib.sha256(dirty['diff'].encode()).hexdigest()


def test_the_learning_curve_joins_resumed_runs_in_step_order(tmp_path):
    from mmnorm_plugin.analysis.norm_sweep.runner import _val_curve
    for stamp, lines in (('20260101_000000', [dict(step=1, lr=0.1, loss=2.0),
                                              dict(step=2, **{'coco/bbox_mAP': 0.1})]),
                         ('20260101_010000', [dict(step=4, **{'coco/bbox_mAP': 0.3}),
                                              dict(step=3, **{'coco/bbox_mAP': 0.2,
                                                              'coco/bbox_mAP_50': 0.5})])):
        vis = tmp_path / stamp / 'vis_data'
        vis.mkdir(parents=True)
        (vis / 'scalars.json').write_text(''.join(json.dumps(x) + '\n' for x in lines))
    curve = _val_curve(str(tmp_path))
    assert [p['step'] for p in curve] == [2, 3, 4]
    assert curve[1]['metrics'] == {'coco/bbox_mAP': 0.2, 'coco/bbox_mAP_50': 0.5}


def test_val_interval_asks_for_evaluations_during_training():
    cfg, options = arm_config(STUDY, _arm('BN', 8), seed=0, val_interval=6)
    assert cfg.train_cfg.val_interval == 6 and options['train_cfg.val_interval'] == 6
    cfg, _ = arm_config(STUDY, _arm('BN', 8), seed=0)
    assert cfg.train_cfg.val_interval >= 10 ** 9


def test_a_missing_project_set_is_generated_and_another_is_left_alone(tmp_path, monkeypatch):
    from mmnorm_plugin.analysis.norm_sweep import ensure_dataset
    monkeypatch.chdir(tmp_path)
    cfg = Config(dict(train_dataloader=dict(dataset=dict(data_root='data/tiny_coco/'))))
    assert ensure_dataset(cfg) == 'data/tiny_coco'
    assert (tmp_path / 'data' / 'tiny_coco' / 'annotations' / 'instances_val.json').is_file()
    other = Config(dict(train_dataloader=dict(dataset=dict(data_root='data/coco/'))))
    assert ensure_dataset(other) is None and not (tmp_path / 'data' / 'coco').exists()
