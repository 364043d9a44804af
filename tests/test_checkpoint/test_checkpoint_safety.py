"""Atomic checkpoint writes, checksums, the resume walk-back and SafeCheckpointHook's save order
(no training here: see tests/test_tools/test_preemption_e2e.py for the Runner end to end)."""
import io
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub, MMLogger
from mmengine.runner.checkpoint import save_checkpoint

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.apis.dist import lost_peer_message
from mmnorm_plugin.engine.safe_checkpoint import SafeCheckpointHook, use_safe_checkpoint_hook
from mmnorm_plugin.checkpoint import safety as cs
from mmnorm_plugin.checkpoint.loading import mmengine_checkpoint_loading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _checkpoint(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    model.register_buffer('big', torch.randn(4096))  # the largest tensor of the file
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    hub = MessageHub(f'safety_{seed}')
    hub.update_scalar('train/loss', 0.5)
    hub.update_info('iter', 3)
    return dict(meta=dict(iter=3, seed=np.int64(seed)), state_dict=model.state_dict(),
                optimizer=opt.state_dict(), message_hub=hub.state_dict(),
                param_schedulers=[dict(last_step=3, base_values=[0.1])])


def _save(checkpoint, path, checksum=True):
    if checksum:
        cs.add_checksum(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    cs.atomic_write(str(path), buffer.getvalue())
    return str(path)


def test_checksum_catches_overwritten_tensor_bytes_that_load_silently(tmp_path,
                                                                      overwrite_tensor_bytes):
    path = _save(_checkpoint(), tmp_path / 'iter_3.pth')
    with mmengine_checkpoint_loading():
        assert cs.checkpoint_problem(path) is None and cs.was_verified(path)
        record = overwrite_tensor_bytes(path)
        torch.load(path, map_location='cpu')  # what mmengine does: no error
        with pytest.raises(cs.DamagedCheckpoint) as err:
            cs.load_verified_checkpoint(path)
    message = str(err.value)
    assert '\n' not in message and path in message and 'SHA-256' in message, message
    assert 'state_dict' in message and 'optimizer' not in message, (record, message)


def test_a_plain_checkpoint_loads_unverified(tmp_path):
    path = _save(_checkpoint(), tmp_path / 'plain.pth', checksum=False)
    with mmengine_checkpoint_loading():
        assert cs.checkpoint_problem(path) is None
    assert not cs.was_verified(path)


def test_truncated_and_empty_files_are_reported_in_one_line(tmp_path):
    path = _save(_checkpoint(), tmp_path / 'iter_3.pth')
    os.truncate(path, os.path.getsize(path) // 2)
    (tmp_path / 'empty.pth').write_bytes(b'')
    with mmengine_checkpoint_loading():
        for name in ('iter_3.pth', 'empty.pth', 'absent.pth'):
            problem = cs.checkpoint_problem(str(tmp_path / name))
            assert problem and '\n' not in problem, (name, problem)
            assert ('truncated' in problem) == (name != 'absent.pth'), problem


def test_a_refused_file_is_not_taken_for_a_damaged_one(tmp_path):
    import argparse
    import zipfile
    refused = _save(dict(_checkpoint(), extra=argparse.Namespace(a=1)), tmp_path / 'iter_4.pth')
    damaged = _save(_checkpoint(), tmp_path / 'iter_3.pth')
    with zipfile.ZipFile(damaged) as zf:  # a flipped bit in a global's name: refused too
        [record] = [i for i in zf.infolist() if i.filename.endswith('data.pkl')]
    with open(damaged, 'r+b') as f:
        data = f.read()
        at = data.index(b'OrderedDict', record.header_offset)
        f.seek(at + len('OrderedDic'))
        f.write(b'x')
    with mmengine_checkpoint_loading():
        assert 'CRC-32' in cs.checkpoint_problem(damaged)
        # intact, but holds what the weights-only unpickler refuses: the user decides
        # (--unsafe-load), the walk-back does not silently fall back to an older checkpoint
        with pytest.raises(pickle.UnpicklingError):
            cs.find_intact_checkpoint([refused, damaged])


def test_resume_walks_back_from_last_checkpoint_to_the_newest_intact(tmp_path,
                                                                     overwrite_tensor_bytes):
    paths = {step: _save(_checkpoint(step), tmp_path / f'iter_{step}.pth') for step in (2, 4, 6, 8)}
    (tmp_path / 'last_checkpoint').write_text(paths[6])  # iter_8: an older, longer run's
    os.truncate(paths[6], 1000)
    overwrite_tensor_bytes(paths[4])
    (tmp_path / 'best_coco_bbox_mAP_iter_5.pth').write_bytes(b'x')  # not a resume candidate
    candidates = cs.resume_candidates(str(tmp_path), 'iter_{}.pth')
    assert candidates == [paths[6], paths[4], paths[2]]
    with mmengine_checkpoint_loading():
        chosen, skipped = cs.find_intact_checkpoint(candidates)
    assert chosen == paths[2]
    assert [p for p, _ in skipped] == [paths[6], paths[4]]
    assert 'truncated' in skipped[0][1] and 'SHA-256' in skipped[1][1]
    (tmp_path / 'last_checkpoint').unlink()  # without the pointer: every file by step
    assert cs.resume_candidates(str(tmp_path), 'iter_{}.pth') == [paths[s] for s in (8, 6, 4, 2)]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / 'iter_1.pth'
    path.write_bytes(b'old')

    def crash(f, data):
        f.write(data[:2])
        raise OSError('disk full')

    monkeypatch.setattr(cs, '_write_synced', crash)
    with pytest.raises(OSError):
        cs.atomic_write(str(path), b'new content')
    assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['iter_1.pth']


def test_kill_9_inside_the_write_leaves_the_old_file_under_the_final_name(tmp_path):
    path, marker = tmp_path / 'iter_1.pth', tmp_path / 'paused'
    path.write_bytes(b'old')
    child = textwrap.dedent(f"""
        import os, sys, time
        from mmnorm_plugin.checkpoint import safety as cs

        def half_then_wait(f, data):
            f.write(data[:len(data) // 2]); f.flush(); os.fsync(f.fileno())
            open({str(marker)!r}, 'w').close()
            time.sleep(120)

        cs._write_synced = half_then_wait
        cs.atomic_write({str(path)!r}, b'new' * 1000000)
        """)
    proc = subprocess.Popen([sys.executable, '-c', child], env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, 'the child did not pause'
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.read_bytes() == b'old'
    [tmp] = cs.stale_temporaries(str(tmp_path))
    assert os.path.getsize(tmp) == 1500000  # killed half way through the new content


def test_mmengine_save_checkpoint_writes_atomically_through_the_backend(tmp_path, monkeypatch):
    target = str(tmp_path / 'iter_1.pth')
    seen = []  # while the bytes are written: is the final name there, which temporaries are
    write = cs._write_synced
    monkeypatch.setattr(cs, '_write_synced', lambda f, data: (
        seen.append((os.path.exists(target), len(cs.stale_temporaries(str(tmp_path))))),
        write(f, data)))
    save_checkpoint(dict(state_dict={'w': torch.ones(2)}), target,
                    backend_args=dict(backend='atomic_local'))
    assert seen == [(False, 1)] and not cs.stale_temporaries(str(tmp_path))
    assert torch.equal(torch.load(target)['state_dict']['w'], torch.ones(2))


class _Crash(Exception):
    pass


def _fake_runner(work_dir, hook, crash_at):
    """What CheckpointHook uses of a Runner; save_checkpoint dies at iteration ``crash_at``."""
    runner = SimpleNamespace(work_dir=str(work_dir), epoch=0, iter=0,
                             message_hub=MessageHub.get_instance(f'fake_{work_dir}'),
                             logger=MMLogger.get_instance('safety_test'))

    def save(out_dir, filename, file_client_args=None, meta=None, backend_args=None, **kwargs):
        if runner.iter + 1 == crash_at:
            raise _Crash  # the machine went away during this save
        checkpoint = dict(meta=meta, state_dict={'w': torch.full((2,), float(runner.iter))})
        hook.before_save_checkpoint(runner, checkpoint)
        save_checkpoint(checkpoint, os.path.join(out_dir, filename), backend_args=backend_args)

    runner.save_checkpoint = save
    return runner


@pytest.mark.parametrize('hook_cls, survives', [(SafeCheckpointHook, True),
                                                (CheckpointHook, False)])
def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, hook_cls, survives):
    # max_keep_ckpts=1: mmengine deletes iter_1 before it writes iter_2
    hook = hook_cls(interval=1, by_epoch=False, max_keep_ckpts=1)
    runner = _fake_runner(tmp_path, hook, crash_at=2)
    hook.before_train(runner)
    hook._save_checkpoint(runner)
    runner.iter = 1
    with pytest.raises(_Crash):
        hook._save_checkpoint(runner)
    assert (tmp_path / 'iter_1.pth').exists() == survives
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_1.pth')
    if survives:
        with mmengine_checkpoint_loading():
            assert cs.checkpoint_problem(str(tmp_path / 'iter_1.pth')) is None
        assert cs.was_verified(str(tmp_path / 'iter_1.pth'))


def test_the_retired_checkpoint_goes_after_the_new_one_is_in_place(tmp_path):
    hook = SafeCheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=2)
    runner = _fake_runner(tmp_path, hook, crash_at=None)
    hook.before_train(runner)
    for runner.iter in range(3):
        hook._save_checkpoint(runner)
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith('.pth')) == ['iter_2.pth',
                                                                             'iter_3.pth']
    assert runner.message_hub.get_info('keep_ckpt_ids') == [2, 3]
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_3.pth')


def test_before_train_removes_temporaries_of_a_killed_run(tmp_path):
    stale = tmp_path / '.iter_2.pth.tmp-4242-0'
    stale.write_bytes(b'half')
    keep = tmp_path / 'notes.tmp-1'  # not ours
    keep.write_bytes(b'')
    hook = SafeCheckpointHook(interval=1, by_epoch=False)
    hook.before_train(_fake_runner(tmp_path, hook, crash_at=None))
    assert not stale.exists() and keep.exists()


def test_our_tools_swap_in_the_safe_hook_only_for_mmengines():
    cfg = dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=5)))
    use_safe_checkpoint_hook(cfg)
    assert cfg['default_hooks']['checkpoint'] == dict(type='SafeCheckpointHook', interval=5)
    custom = dict(default_hooks=dict(checkpoint=dict(type='MyCheckpointHook')))
    use_safe_checkpoint_hook(custom)
    assert custom['default_hooks']['checkpoint']['type'] == 'MyCheckpointHook'
    use_safe_checkpoint_hook(dict(default_hooks=dict(checkpoint=None)))  # no hook: no error


@pytest.mark.parametrize('text, detail', [
    ('[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed '
     'by peer [127.0.0.1]:11914. This is typically caused by a remote worker crashing.',
     'Connection closed by peer [127.0.0.1]:11914'),
    ('[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 20000ms '
     'for recv operation to complete', 'Timed out waiting 20000ms for recv operation to complete'),
    # what the next collective (DDP's buffer broadcast) raises after gloo timed out on a
    # stopped peer: no source position, no "timed out" (torch 2.13)
    ('Application timeout caused pair closure', 'Application timeout caused pair closure'),
])
def test_a_lost_peer_is_one_actionable_line(text, detail):
    message = lost_peer_message(RuntimeError(text), 20)
    assert f'({detail})' in message and '\n' not in message
    assert 'env_cfg.dist_cfg.timeout = 20 s' in message and '--resume' in message


@pytest.mark.parametrize('text', [
    'mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)',
    'DataLoader worker (pid 123) exited unexpectedly: Broken pipe',  # not a collective
    '[../third_party/gloo/gloo/allreduce.cc:12] Gloo allreduce: tensor sizes differ',  # a bug
])
def test_other_errors_are_not_taken_for_a_lost_peer(text):
    assert lost_peer_message(RuntimeError(text), 20) is None
