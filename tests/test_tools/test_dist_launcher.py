"""tools/dist_train.sh and tools/dist_test.sh with 2 CPU processes (gloo), as a user runs them.

Per demo config (all five): 2 ranks x 2 iterations; parameters are identical on both ranks afterwards
(DDP all-reduces gradients), while norm buffers are per rank as documented (mmengine wraps with
broadcast_buffers=False: BN running statistics and the CBN window are each rank's own); the
COCO metrics are written once (rank 0); for BN and CBN also: the checkpoint resumes under the
launcher (CBN) and dist_test evaluates to the same metrics as a single-process tools/test.py.
With ``sync_bn='torch'`` (CBN, BGN, BKN) our tools/train.py runs their synced variants: the
statistics are pooled over both ranks, so the running statistics are identical on both ranks
while CBN's window (each rank's own images) is not, and the checkpoint evaluates.
A rank killed (or stopped: a vanished machine) in a 2-node run makes the other stop with one
line within ``env_cfg.dist_cfg.timeout``.
"""
import glob
import json
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo')

pytestmark = pytest.mark.slow

HOOK = '''
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm


@HOOKS.register_module()
class DumpRankStateHook(Hook):
    """Each rank saves its own parameters and the rest of its state (buffers, CBN windows)."""

    def after_train(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        params = dict(model.named_parameters())
        torch.save(dict(wrapper=type(runner.model).__name__,
                        norm_types=sorted({type(m).__name__ for m in model.modules()
                                           if isinstance(m, _BatchNorm)}),
                        params={k: v.detach() for k, v in params.items()},
                        buffers={k: v for k, v in model.state_dict().items() if k not in params}),
                   f'{runner.work_dir}/rank{get_rank()}_state.pth')
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _launch(script, args, cwd):
    env = dict(os.environ, PYTHON=sys.executable, PORT=_free_port(), PYTHONPATH=str(cwd),
               OMP_NUM_THREADS='1')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def _metric_lines(work_dir):
    """The metric records of the one run directory (a second one would be another rank's).

    mmengine writes the same record to <ts>/<ts>.json (test) or to both vis_data/<ts>.json
    and vis_data/scalars.json (train): each file must hold it exactly once.
    """
    runs = [d for d in glob.glob(osp.join(work_dir, '*')) if osp.isdir(d)]
    assert len(runs) == 1, runs
    records = []
    for path in glob.glob(osp.join(runs[0], '**', '*.json'), recursive=True):
        lines = [json.loads(line) for line in open(path) if 'coco/bbox_mAP' in line]
        assert len(lines) <= 1, (path, lines)
        if lines and lines[0] not in records:
            records.append(lines[0])
    return records


def _short(iters):
    return ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1']


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp('dist')
    make_tiny_coco(str(path / 'data' / 'tiny_coco'), num_train=8, num_val=4)
    (path / 'rank_dump_hook.py').write_text(HOOK)
    return path


# bn and cbn: the whole path; bgn, bkn, mabn: training under the launcher (about 30 s each)
@pytest.mark.parametrize('norm', ['bn', 'cbn', 'bgn', 'bkn', 'mabn'])
def test_dist_train_and_test_with_two_cpu_processes(workdir, norm):
    _train_and_test(workdir, norm, synced=False)


@pytest.mark.parametrize('norm', ['cbn', 'bgn', 'bkn'])
def test_sync_bn_trains_the_synced_variants_under_the_launcher(workdir, norm):
    _train_and_test(workdir, norm, synced=True)


def _train_and_test(workdir, norm, synced):
    tag = f'{norm}_sync' if synced else norm
    config = workdir / f'{tag}.py'
    extra = 'model = dict(backbone=dict(norm_cfg=dict(burnin_iters=0)))' if norm == 'cbn' else ''
    if synced:
        extra += "\nsync_bn = 'torch'"
    # the demo config + a hook; our tools/train.py adds mmnorm_plugin to custom_imports
    config.write_text(textwrap.dedent(f"""\
        _base_ = '{DEMO}/faster-rcnn_r18-w16_fpn_{norm}_tiny-coco.py'
        custom_imports = dict(imports=['rank_dump_hook'], allow_failed_imports=False)
        custom_hooks = [dict(type='DumpRankStateHook')]
        """) + extra + '\n')
    train_dir = workdir / f'train_{tag}'
    log = _launch('dist_train.sh', [str(config), '2', '--work-dir', str(train_dir), *_short(2)],
                  cwd=workdir)
    assert 'Distributed training: True' in log or 'distributed' in log.lower()
    rank0, rank1 = (torch.load(train_dir / f'rank{r}_state.pth', weights_only=False)
                    for r in (0, 1))
    assert rank0['wrapper'] == 'AnyDeviceDDP'
    assert rank0['params'].keys() == rank1['params'].keys()
    for key, value in rank0['params'].items():
        assert torch.equal(value, rank1['params'][key]), key
    # buffers are per rank: each rank normalized its own images
    def per_rank(suffix):
        keys = [k for k in rank0['buffers'] if k.endswith(suffix)]
        return keys and any(not torch.equal(rank0['buffers'][k], rank1['buffers'][k])
                            for k in keys)

    if synced:  # pooled statistics: the same running statistics on both ranks
        assert rank0['norm_types'] == [f'Sync{norm.upper()}'], rank0['norm_types']
        assert f"cfg.sync_bn='torch' converted" in log and f'-> Sync{norm.upper()}' in log
        for key in [k for k in rank0['buffers'] if k.endswith(('running_mean', 'running_var'))]:
            torch.testing.assert_close(rank0['buffers'][key], rank1['buffers'][key],
                                       rtol=1e-5, atol=1e-6, msg=key)
    else:
        assert per_rank('running_var')  # MABN's R included
    if norm == 'cbn':
        assert per_rank('hist_mean')
    if norm == 'mabn':
        assert per_rank('chi2_history')
    # the validation at the end of training: one metrics record, written by rank 0
    assert len(_metric_lines(train_dir)) == 1
    dumped = (train_dir / f'{tag}.py').read_text()
    assert "'mmnorm_plugin'" in dumped and "'rank_dump_hook'" in dumped
    assert "type='RankZeroLoggerHook'" in dumped  # dist_test's metrics file: one writer

    if synced:  # the checkpoint (plain CBN/BGN/BKN keys) evaluates in one process
        single_dir = workdir / f'single_{tag}'
        env = dict(os.environ, PYTHONPATH=str(workdir), OMP_NUM_THREADS='1')
        proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config),
                               str(train_dir / 'iter_2.pth'), '--work-dir', str(single_dir)],
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(_metric_lines(single_dir)) == 1
        return
    if norm not in ('bn', 'cbn'):
        return
    if norm == 'cbn':  # resume under the launcher
        log = _launch('dist_train.sh', [str(config), '2', '--work-dir', str(train_dir),
                                        '--resume', *_short(3)], cwd=workdir)
        assert 'Iter(train) [3/3]' in log and 'Iter(train) [1/3]' not in log
        resumed = torch.load(train_dir / 'iter_3.pth', map_location='cpu', weights_only=False)
        assert resumed['meta']['iter'] == 3
        ckpt = train_dir / 'iter_3.pth'
    else:
        ckpt = train_dir / 'iter_2.pth'

    test_dir = workdir / f'test_{norm}'
    _launch('dist_test.sh', [str(config), str(ckpt), '2', '--work-dir', str(test_dir)],
            cwd=workdir)
    dist_metrics = _metric_lines(test_dir)
    assert len(dist_metrics) == 1
    single_dir = workdir / f'single_{norm}'
    env = dict(os.environ, PYTHONPATH=str(workdir), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config),
                           str(ckpt), '--work-dir', str(single_dir)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = _metric_lines(single_dir)[0]
    assert {k: v for k, v in dist_metrics[0].items() if k.startswith('coco/')} == \
        {k: v for k, v in single.items() if k.startswith('coco/')}


def _descendants(pid):
    children = []
    for task in os.listdir(f'/proc/{pid}/task'):
        with open(f'/proc/{pid}/task/{task}/children') as f:
            children += [int(c) for c in f.read().split()]
    return children + [d for c in children for d in _descendants(c)]


def _train_worker(launcher_pid):
    """The tools/train.py process under a dist_train.sh (bash -> torchrun -> worker)."""
    for pid in _descendants(launcher_pid):
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            cmd = f.read().split(b'\0')
        if any(arg.endswith(b'train.py') for arg in cmd) and b'torch.distributed.run' not in cmd:
            return pid
    raise AssertionError(f'no train.py worker under {launcher_pid}')


# SIGKILL: the peer's sockets close (gloo notices at once); SIGSTOP: a machine that vanished
# without closing them (only the timeout ends the wait)
@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGSTOP], ids=['killed', 'stopped'])
def test_a_dead_rank_stops_the_other_within_the_timeout(workdir, sig):
    timeout = 30
    # two "nodes" of one process each: rank 0's torchrun does not see rank 1 die, so rank 0
    # itself must notice (on one node, torchrun would stop it with SIGTERM)
    env = dict(os.environ, PYTHON=sys.executable, PORT=_free_port(), PYTHONPATH=str(workdir),
               OMP_NUM_THREADS='1', NNODES='2')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    args = [osp.join(DEMO, 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'), '1', '--work-dir',
            str(workdir / f'dead_rank_{sig.name}'), '--cfg-options', 'train_cfg.max_iters=500',
            'default_hooks.logger.interval=1', f'env_cfg.dist_cfg.timeout={timeout}']
    logs = [workdir / f'dead_rank_{sig.name}_node{n}.log' for n in (0, 1)]
    nodes = []
    for n in (0, 1):
        with open(logs[n], 'w') as out:
            nodes.append(subprocess.Popen(
                ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), *args], cwd=workdir,
                env=dict(env, NODE_RANK=str(n)), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))
    victim = None
    try:
        deadline = time.time() + 400
        while not re.search(r'Iter\(train\) \[\s*2/500\]', logs[0].read_text()):
            assert nodes[0].poll() is None and nodes[1].poll() is None, logs[0].read_text()[-3000:]
            assert time.time() < deadline, 'training did not start'
            time.sleep(0.5)
        victim = _train_worker(nodes[1].pid)
        os.kill(victim, sig)
        start = time.time()
        try:
            rc = nodes[0].wait(timeout + 120)
        except subprocess.TimeoutExpired:
            pytest.fail(f'rank 0 still runs {timeout + 120} s after rank 1 was {sig.name}ed')
        elapsed = time.time() - start
    finally:
        if victim is not None and sig == signal.SIGSTOP:
            os.kill(victim, signal.SIGCONT)
        for node in nodes:  # each in its own session: torchrun and its worker
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(60)
    log = logs[0].read_text()
    line = re.search(r'rank 0 of 2: lost contact with another rank \((.*?)\): .*', log)
    assert rc != 0 and line, log[-4000:]
    assert f'env_cfg.dist_cfg.timeout = {timeout} s' in line.group(0)
    assert '--resume' in line.group(0)
    # within the timeout (plus the time to leave a step on this shared 2-core machine)
    assert elapsed < timeout + 45, (elapsed, line.group(0))
