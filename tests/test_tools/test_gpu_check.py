"""The GPU check (docs/gpu_check.md) as CI can run it: `DEVICE=cpu make gpu-check` through
tools/gpu_check/run.sh with a short budget. Checks the JSON summary's structure, that the
correctness parts passed, and what the CPU mode says about the CUDA-only checks; the table is
also formatted for a CUDA-shaped summary (a CUDA run cannot be exercised here), and the
mmcv._ext stand-in (for an mmcv without compiled ops) makes mmdet's modules import. A part
declared once and listed in the registry reaches the run, the JSON and the table; the loop the
parts share records errors per item and keeps to the budget."""
import dataclasses
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STATUSES = {'passed', 'partial', 'failed', 'error', 'skipped'}
ITEM_STATUSES = {'passed', 'failed', 'error', 'skipped'}


@pytest.fixture(scope='module')
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check')
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'CONDA_PREFIX')}
    env.update(PYTHON=sys.executable, DEVICE='cpu', OUT=str(out), OMP_NUM_THREADS='1',
               GPU_CHECK_INSTALL='never')
    proc = subprocess.run(['bash', 'tools/gpu_check/run.sh', '--budget', '60'], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode in (0, 1), log  # 1: a part failed; the summary says which
    with open(out / 'gpu_check.json') as f:
        summary = json.load(f)
    return summary, proc, out


@pytest.mark.slow
def test_cpu_mode_summary_structure(cpu_run):
    from mmnorm_plugin.gpu_check import PARTS, SCHEMA
    summary, proc, out = cpu_run
    assert summary['kit'] == 'mmnorm-plugin gpu-check' and summary['schema'] == SCHEMA
    assert summary['env']['device'] == 'cpu' and summary['env']['torch']
    assert summary['env']['mmcv_ops'] == 'compiled'  # this project's CPU stack has mmcv ops
    assert summary['config']['compile_backend'] == 'aot_eager'
    assert list(summary['parts']) == list(PARTS)
    for name, part in summary['parts'].items():
        assert part['status'] in STATUSES, name
        assert part['seconds'] >= 0 and part['budget_s'] >= 0
        assert isinstance(part['items'], list)
        for item in part['items']:
            assert item['status'] in ITEM_STATUSES, (name, item)
    assert summary['ok'] == (proc.returncode == 0)
    assert isinstance(summary['elapsed_s'], float)
    # the files of a CPU run: JSON, table, log (no nvidia-smi.txt)
    assert sorted(os.listdir(out)) == ['gpu_check.json', 'gpu_check.log', 'gpu_check.txt']
    assert summary['table'] in proc.stdout
    assert 'correctness  passed' in summary['table']


@pytest.mark.slow
def test_cpu_mode_correctness_parts_passed(cpu_run):
    from mmnorm_plugin.gpu_check.cases import METHODS, REFERENCES, SYNCED
    parts = cpu_run[0]['parts']
    for name in ('correctness', 'amp', 'host_syncs'):
        assert parts[name]['status'] == 'passed', (name, parts[name])
    names = [it['name'] for it in parts['correctness']['items']]
    assert sorted(names) == sorted(METHODS + SYNCED + REFERENCES)
    for item in parts['correctness']['items']:
        assert item['vs_cpu_fp64']['grad'] < 1e-4 and item['vs_cpu_fp32'] == 'the device is the CPU'
        if item['name'].startswith('Sync'):
            assert item['vs_unsynced']['grad'] == 0.0  # world size 1: the unsynced layer
    for item in parts['host_syncs']['items']:
        assert item['fp32']['counted'] == 0
        assert item['fp32']['sync_debug_mode'] == 'skipped: no CUDA'


@pytest.mark.slow
def test_cpu_mode_measuring_parts(cpu_run):
    parts = cpu_run[0]['parts']
    rows = [it for it in parts['layer_bench']['items'] if 'norm_ms' in it]
    assert rows, parts['layer_bench']
    for row in rows:
        assert row['launches'] == 'skipped: no CUDA' and row['aten_ops'] > 0
        assert math.isfinite(row['x_BN']) and row['norm_ms'] > 0
    assert any('layer_x_floor' in row for row in rows if row['name'] == 'CBN')
    compiled = [it for it in parts['compile']['items'] if it['status'] != 'skipped']
    assert compiled and compiled[0]['name'] == 'BN' and compiled[0]['status'] == 'passed'
    for item in compiled:  # a norm that breaks or fails is recorded, not fatal
        assert 'graph_breaks' in item or 'explain_error' in item or item['status'] == 'error'
    # ResNet-50 + FPN from mmdet's modules: BN (the scale of the ratios) runs whenever the
    # part starts, as does the first item of every part while the whole budget lasts
    model = [it for it in parts['model']['items'] if it['status'] != 'skipped']
    assert model and model[0]['name'] == 'BN' and model[0]['status'] == 'passed'


def test_table_of_a_cuda_summary():
    """The CUDA-only fields (launch counts, sync debug mode, peak memory) format."""
    from mmnorm_plugin.gpu_check import format_table
    from mmnorm_plugin.gpu_check.kit import _clean, part_status
    items = {
        'correctness': [dict(name='CBN', status='passed',
                             vs_cpu_fp64=dict(output=1e-7, grad=2e-7, grad_max=1e-6, loss=0.0,
                                              state=1e-6, state_worst_key=None),
                             vs_cpu_fp32=dict(output=1e-7, grad=2e-7, loss=0.0, state=1e-6,
                                              state_worst_key='1.running_var'))],
        'amp': [dict(name='CBN', status='failed', bf16=dict(output=1e-3, grad=0.3, loss=1e-3,
                                                            grad_x_BN=4.0, status='failed'))],
        'host_syncs': [dict(name='MABN', status='failed',
                            fp32=dict(counted=0, warn_mode_syncs=2, error_mode='called a sync',
                                      where=['mabn.py:1']))],
        'layer_bench': [dict(name='CBN', shape=[2, 256, 200, 304], dtype='bf16', status='passed',
                             norm_ms=0.5, x_BN=3.0, x_GN=2.0, layer_ms=4.0, layer_x_BN=1.2,
                             floor_ms=3.5, layer_x_floor=1.14, launches=41, aten_ops=230,
                             peak_mb=300.0),
                        dict(name='RoI bf16', status='skipped', reason='budget')],
        'compile': [dict(name='BKN', status='error', error='BackendCompilerFailed: x'),
                    dict(name='CBN', status='passed', graphs=10, graph_breaks=9,
                         break_reasons=['Tensor with grad_fn()'], vs_eager=dict(loss=0.0),
                         eager_ms=2.0, compiled_ms=1.0, speedup=2.0, first_steps_s=30.0)],
        'model': [dict(name='BN', dtype='bf16', status='passed', ms=80.0, x_BN=1.0, x_GN=0.9,
                       syncs=0)],
    }
    parts = {k: dict(items=v, seconds=1.0, budget_s=2.0) for k, v in items.items()}
    for part in parts.values():
        part['status'] = part_status(part)
    summary = dict(env=dict(device='cuda', device_name='NVIDIA H200', torch='2.11.0+cu130',
                            cuda='13.0', mmcv_ops='stub (No module named mmcv._ext)'),
                   parts=parts, elapsed_s=3.0, ok=False)
    table = format_table(summary)
    assert 'NVIDIA H200' in table and '2 syncs' in table and 'BackendCompilerFailed' in table
    assert '41' in table and '1.14' in table
    assert [parts[k]['status'] for k in items] == ['passed', 'failed', 'failed', 'partial',
                                                   'failed', 'passed']
    assert json.dumps(_clean(dict(a=float('nan'), b=(1, float('inf'))))) == \
        '{"a": "nan", "b": [1, "inf"]}'


def test_cuda_preset_needs_no_cuda_to_build():
    from mmnorm_plugin.gpu_check import KitConfig
    from mmnorm_plugin.benchmarks.layer_benchmark import DETECTION_SHAPES
    cfg = KitConfig.for_device('cuda', budget_s=100.0)
    assert cfg.budget_s == 100.0 and cfg.compile_backend == 'inductor'
    assert tuple(cfg.bench_shapes.values()) == DETECTION_SHAPES
    assert KitConfig.for_device('cpu').compile_backend == 'aot_eager'


def test_mmcv_ext_stand_in_lets_mmdet_modules_import():
    """With an mmcv built without ops (`make gpu-wheels`): mmcv.ops, mmdet.models and
    the plugin import through the stand-in, and a real op call fails loudly."""
    code = '''
import sys
sys.path.insert(0, 'tools/gpu_check')
from mmcv_ext_stub import ensure_mmcv_ext
print(ensure_mmcv_ext(force=True))
import torch, mmcv.ops
from mmdet.models.backbones import ResNet
from mmdet.models.necks import FPN
import mmnorm_plugin
try:
    mmcv.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)
except RuntimeError as exc:
    print('raised:', exc)
'''
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith('stub (forced)')
    assert 'raised: mmcv._ext.nms: mmcv was built without its compiled ops' in proc.stdout


# --------------------------------------------------------------------------- parts as declared
def _dummy_part(name='dummy', share=1.0, out_dir=None):
    """A part as a new one would be written: a run over its items with the shared loop and
    its own rows; its second item raises."""
    from mmnorm_plugin.gpu_check import Part
    from mmnorm_plugin.gpu_check.parts import run_items
    seen_running = []

    def run(ctx):
        def measure(key, item):
            if key == 'bad':
                raise RuntimeError('boom')
            if key == 'c' and out_dir:  # the JSON on disk holds the items done so far
                with open(osp.join(out_dir, 'gpu_check.json')) as f:
                    seen_running.append(json.load(f)['parts'][name])
            item['value'] = key * 2
        return dict(items=run_items(ctx, name, ['a', 'bad', 'c'], measure),
                    notes=f'{name} notes')

    def rows(part):
        return [f'{name} section ({part["notes"]})'] + [
            f'{it["name"]} {it["status"]} {it.get("value", "-")}' for it in part['items']]

    return Part(name, share=share, run=run, rows=rows), seen_running


def test_a_part_declared_once_reaches_the_run_the_json_and_the_table(tmp_path):
    from mmnorm_plugin.gpu_check import REGISTRY, KitConfig, run_kit
    part, seen_running = _dummy_part(out_dir=str(tmp_path))
    registry = REGISTRY + (part, )
    cfg = KitConfig.for_device('cpu', budget_s=60.0, parts=('dummy', ))
    logs = []
    summary = run_kit(cfg, str(tmp_path), log=logs.append, registry=registry)
    with open(tmp_path / 'gpu_check.json') as f:
        on_disk = json.load(f)
    got = on_disk['parts']['dummy']
    assert list(on_disk['parts']) == ['dummy'] and got['notes'] == 'dummy notes'
    # an exception is recorded on its item and the next item still runs
    assert [(it['name'], it['status']) for it in got['items']] == \
        [('a', 'passed'), ('bad', 'error'), ('c', 'passed')]
    assert got['items'][1]['error'] == 'RuntimeError: boom' and got['items'][2]['value'] == 'cc'
    assert got['status'] == 'failed' and got['seconds'] >= 0 and got['budget_s'] > 0
    assert on_disk['ok'] is False and summary['ok'] is False
    # saved after every item: the JSON read during the third held the first two, 'running'
    assert seen_running[0]['status'] == 'running' and len(seen_running[0]['items']) == 2
    table = on_disk['table']
    assert table == (tmp_path / 'gpu_check.txt').read_text().rstrip('\n')
    assert 'dummy section (dummy notes)' in table and 'c passed cc' in table
    assert 'dummy        failed' in table and '1 error' in table
    assert '  dummy bad: error' in logs and '  dummy c: passed' in logs


def test_each_part_has_its_section_in_run_order_and_an_unknown_one_its_line_only():
    from mmnorm_plugin.gpu_check import REGISTRY, format_table
    first, _ = _dummy_part('first')
    second, _ = _dummy_part('second')
    items = [dict(name='a', status='passed', value='aa')]
    parts = {n: dict(status='passed', seconds=1.0, budget_s=2.0, items=items, notes=n)
             for n in ('second', 'old_part', 'first')}
    summary = dict(env=dict(device='cpu'), parts=parts, elapsed_s=1.0, ok=True)
    table = format_table(summary, REGISTRY + (first, second))
    assert table.index('second section') < table.index('first section')
    assert 'old_part     passed' in table and 'old_part section' not in table
    assert format_table(summary).count('section') == 0  # not registered: lines only
    broken = dataclasses.replace(first, rows=lambda part: [part['missing']])
    table = format_table(summary, REGISTRY + (broken, second))
    assert "first: rows not formatted: KeyError: 'missing'" in table
    assert 'second section' in table


def test_the_shared_item_loop_keeps_to_the_budget():
    import time

    from mmnorm_plugin.gpu_check.measure import Budget
    from mmnorm_plugin.gpu_check.parts import Context, run_items
    import torch
    ran = []

    def measure(key, item):
        ran.append(key)
        item['seen'] = True

    far = time.perf_counter() + 3600
    spent = Context(cfg=None, device=torch.device('cpu'), budget=Budget(0.0, far), log=str)
    # the part's share is gone, the whole run's deadline is not: essential items still run
    assert [it['status'] for it in run_items(spent, 'p', [1, 2], measure)] == ['passed'] * 2
    # otherwise only the first item does, the rest are recorded as skipped
    ran.clear()
    items = run_items(spent, 'p', [1, 2, 3], measure, essential=False,
                      skipped=lambda k: [dict(name=f'k{k}', status='skipped', reason='budget')])
    assert ran == [1] and [it['name'] for it in items] == ['1', 'k2', 'k3']
    assert items[1] == dict(name='k2', status='skipped', reason='budget')
    # past the whole run's deadline nothing runs
    ran.clear()
    over = Context(cfg=None, device=torch.device('cpu'), budget=Budget(0.0, 0.0), log=str)
    assert [it['status'] for it in run_items(over, 'p', [1, 2], measure)] == ['skipped'] * 2
    assert ran == []


def test_the_registry_is_the_one_list_of_parts():
    from mmnorm_plugin.gpu_check import PARTS, REGISTRY, SHARES, KitConfig, Part, check_parts
    from mmnorm_plugin.gpu_check.kit import run_kit
    assert PARTS == ('correctness', 'amp', 'host_syncs', 'layer_bench', 'model', 'compile')
    assert PARTS == tuple(p.name for p in REGISTRY) == KitConfig.for_device('cpu').parts
    assert SHARES == {p.name: p.share for p in REGISTRY}
    assert all(p.rows is not None for p in REGISTRY)
    with pytest.raises(ValueError, match=r"^unknown parts \['nope'\]; known: \['correctness'"):
        check_parts(['amp', 'nope'])
    with pytest.raises(ValueError, match='two parts named'):
        check_parts(['amp'], REGISTRY + (REGISTRY[1], ))
    with pytest.raises(ValueError, match='share must be > 0'):
        Part('x', share=0, run=lambda ctx: {})
    with pytest.raises(ValueError, match='identifier'):
        Part('a,b', share=1, run=lambda ctx: {})
    with pytest.raises(ValueError, match='unknown parts'):  # refused before anything is written
        run_kit(KitConfig.for_device('cpu', parts=('nope', )), '/nonexistent/never/made')


def test_cli_refuses_an_unknown_part_in_one_line(tmp_path, capsys):
    sys.path.insert(0, osp.join(ROOT, 'tools', 'gpu_check'))
    try:
        import gpu_check as cli
    finally:
        sys.path.pop(0)
    import torch
    out = tmp_path / 'out'
    rc = cli.main(['--device', 'cpu', '--parts', 'amp,nope', '--out', str(out),
                   '--threads', str(torch.get_num_threads())])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not out.exists()
    assert err.startswith("[gpu-check] --parts: unknown parts ['nope']") and '\n' not in err
