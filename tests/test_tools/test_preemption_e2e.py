"""Faults a preemptible machine produces, injected into real tools/train.py and tools/test.py runs
on the tiny dataset: a truncated last checkpoint, a kill -9 inside the checkpoint write, tensor
bytes changed on disk; and checkpoints of mmengine's own CheckpointHook (no checksum) still
resume and evaluate. (A dead rank: tests/test_tools/test_dist_launcher.py.)"""
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mmnorm_plugin.checkpoint import safety as cs
from mmnorm_plugin.checkpoint.loading import mmengine_checkpoint_loading
from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py')
TRAIN, TEST = osp.join(ROOT, 'tools', 'train.py'), osp.join(ROOT, 'tools', 'test.py')

pytestmark = pytest.mark.slow

# stops inside the write of iter_2.pth, half of it on disk, until the test kills the process
PAUSE_IN_WRITE = '''
import os, time
from mmnorm_plugin.checkpoint import safety as checkpoint_safety

_write = checkpoint_safety._write_synced


def _pause_in_iter_2(f, data):
    if os.path.basename(os.readlink(f'/proc/self/fd/{f.fileno()}')).startswith('.iter_2.pth'):
        f.write(data[:len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        open('paused_in_write', 'w').close()
        time.sleep(600)
    _write(f, data)


checkpoint_safety._write_synced = _pause_in_iter_2
'''


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp('preempt')
    make_tiny_coco(str(path / 'data' / 'tiny_coco'), num_train=8, num_val=4)
    (path / 'pause_in_write.py').write_text(PAUSE_IN_WRITE)
    (path / 'paused.py').write_text(textwrap.dedent(f"""\
        _base_ = '{CONFIG}'
        custom_imports = dict(imports=['mmnorm_plugin', 'pause_in_write'],
                              allow_failed_imports=False)
        """))
    return path


def _env(cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(cwd))
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    return env


def _run(args, cwd, ok=True):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(cwd), capture_output=True,
                          text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, f'rc {proc.returncode}\n' + log[-6000:]
    return proc


def _train(work_dir, iters, *extra, config=CONFIG, interval=2, options=()):
    """tools/train.py args: ``iters`` iterations, a checkpoint every ``interval``, no validation.

    A fixed seed: the Runner builds the data loader (sampler order, augmentation seeds of its
    workers) from the seed of the run before a resume restores the checkpoint's.
    """
    return [TRAIN, str(config), '--work-dir', str(work_dir), *extra, '--cfg-options',
            f'train_cfg.max_iters={iters}', f'default_hooks.checkpoint.interval={interval}',
            'default_hooks.logger.interval=1', 'val_cfg=None', 'val_dataloader=None',
            'val_evaluator=None', 'randomness.seed=0', *options]


def _problem(path):
    with mmengine_checkpoint_loading():
        return cs.checkpoint_problem(str(path))


def _load(path):
    with mmengine_checkpoint_loading():
        return torch.load(path, map_location='cpu')


def _adopt(src_files, dst):
    """Copy checkpoints into a new work dir, pointing last_checkpoint at the newest."""
    dst.mkdir()
    for src in src_files:
        shutil.copy(src, dst / osp.basename(src))
    (dst / 'last_checkpoint').write_text(str(dst / osp.basename(src_files[-1])))


@pytest.fixture(scope='module')
def trained(workdir):
    """iter_2.pth and iter_4.pth of a 4-iteration run, written by our tools (with checksums)."""
    work_dir = workdir / 'trained'
    _run(_train(work_dir, 4), cwd=workdir)
    for step in (2, 4):
        assert _problem(work_dir / f'iter_{step}.pth') is None
        assert cs.was_verified(str(work_dir / f'iter_{step}.pth'))
    return work_dir


def test_resume_walks_back_past_a_truncated_checkpoint_bit_identically(workdir, trained):
    run, reference = workdir / 'truncated', workdir / 'reference'
    _adopt([trained / 'iter_2.pth', trained / 'iter_4.pth'], run)
    _adopt([trained / 'iter_2.pth'], reference)
    broken = run / 'iter_4.pth'
    os.truncate(broken, os.path.getsize(broken) // 2)  # the machine died during the write

    log = _run(_train(run, 4, '--resume'), cwd=workdir).stdout
    skipped = re.search(r'--resume: skipping checkpoint (\S+): (.*)', log)
    assert skipped and skipped.group(1) == str(broken) and 'truncated' in skipped.group(2), log
    assert f'--resume: resuming from {run / "iter_2.pth"}' in log
    assert 'Iter(train) [3/4]' in log and 'Iter(train) [1/4]' not in log
    # the broken file was replaced by a whole, verified one
    assert _problem(broken) is None and cs.was_verified(str(broken))

    _run(_train(reference, 4, '--resume', str(reference / 'iter_2.pth')), cwd=workdir)
    ours, theirs = _load(broken), _load(reference / 'iter_4.pth')
    assert ours['meta']['iter'] == theirs['meta']['iter'] == 4
    assert ours['state_dict'].keys() == theirs['state_dict'].keys()
    for key, value in ours['state_dict'].items():
        assert torch.equal(value, theirs['state_dict'][key]), key
    momentum = [(s['momentum_buffer'], theirs['optimizer']['state'][i]['momentum_buffer'])
                for i, s in ours['optimizer']['state'].items()]
    assert momentum and all(torch.equal(a, b) for a, b in momentum)


def test_damaged_checkpoints_stop_test_and_explicit_resume_in_one_line(
        workdir, trained, overwrite_tensor_bytes):
    run = workdir / 'flipped'
    _adopt([trained / 'iter_2.pth', trained / 'iter_4.pth'], run)
    damaged = run / 'iter_4.pth'
    overwrite_tensor_bytes(str(damaged))
    _load(damaged)  # loads as if nothing happened: only the checksum notices

    for args in ([TEST, CONFIG, str(damaged), '--work-dir', str(workdir / 'flipped_test')],
                 _train(run, 6, '--resume', str(damaged))):
        proc = _run(args, cwd=workdir, ok=False)
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f'checkpoint {damaged}: the SHA-256 of its ') and \
            'Traceback' not in proc.stderr, proc.stderr[-3000:]
    # the explicit resume names the intact alternative
    assert last.endswith(f'the newest intact checkpoint is {run / "iter_2.pth"}: resume with '
                         f'--resume {run / "iter_2.pth"}, or --resume alone to pick it '
                         'automatically'), last


def test_kill_9_inside_the_checkpoint_write_leaves_no_broken_checkpoint(workdir):
    run = workdir / 'killed'
    marker = workdir / 'paused_in_write'
    log = workdir / 'killed.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, *_train(run, 2, config=workdir / 'paused.py',
                                                         interval=1)],
                                cwd=workdir, env=_env(workdir), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 400
        while not marker.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, 'the run never reached the write of iter_2.pth'
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / 'iter_2.pth').exists()
    assert (run / 'last_checkpoint').read_text() == str(run / 'iter_1.pth')
    for name in os.listdir(run):
        if name.endswith('.pth'):
            assert _problem(run / name) is None, name
    [partial] = cs.stale_temporaries(str(run))
    assert osp.basename(partial).startswith('.iter_2.pth') and os.path.getsize(partial) > 0

    log = _run(_train(run, 2, '--resume', interval=1), cwd=workdir).stdout
    assert f'removed {partial}' in log and f'resuming from {run / "iter_1.pth"}' in log
    assert 'Iter(train) [2/2]' in log and 'Iter(train) [1/2]' not in log
    assert _problem(run / 'iter_2.pth') is None and cs.was_verified(str(run / 'iter_2.pth'))
    assert not cs.stale_temporaries(str(run))


def test_plain_mmdet_checkpoints_still_resume_and_evaluate(workdir):
    run = workdir / 'plain'
    _run(_train(run, 2, options=['default_hooks.checkpoint.type=CheckpointHook']), cwd=workdir)
    assert cs.CHECKSUM_KEY not in _load(run / 'iter_2.pth')['meta']
    log = _run(_train(run, 3, '--resume'), cwd=workdir).stdout
    assert f'resuming from {run / "iter_2.pth"}; it records no checksum' in log
    assert 'Iter(train) [3/3]' in log and 'Iter(train) [1/3]' not in log
    proc = _run([TEST, CONFIG, str(run / 'iter_2.pth'), '--work-dir', str(workdir / 'plain_test')],
                cwd=workdir)
    assert 'bbox_mAP_copypaste' in proc.stdout + proc.stderr
