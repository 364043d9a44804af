"""Issue 28, as an attacker tries it: a checkpoint never runs code, never reads memory, trust names
one file, loads are scoped one at a time, and every byte (``meta`` too) is verified.

The tests that can crash the interpreter (the HistoryBuffer memory read) run in a subprocess, so
a SIGSEGV shows as the child's return code. Every test here failed on the code before issue 28
(the marker was created, the child died of SIGSEGV, or the damage loaded as verified); see
``docs/checkpoint_safety.md``. The same attacks through the real CLIs:
``tests/test_tools/test_checkpoint_attacks_e2e.py``.
"""
import argparse
import copy
import importlib.util
import io
import os
import os.path as osp
import pickle
import struct
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import CheckpointLoader

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.checkpoint import safety as cs
from mmnorm_plugin.checkpoint.loading import mmengine_checkpoint_loading

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))
FASTER_BN = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py')
_spec = importlib.util.spec_from_file_location('hostile_pickles', osp.join(HERE,
                                                                           'hostile_pickles.py'))
hp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hp)


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _runner_checkpoint(seed=0, **meta):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    hub = MessageHub(f'attacks_{seed}')
    for i in range(3):
        hub.update_scalar('train/loss', float(i) + 0.5)
    return dict(meta=dict(iter=3, epoch=1, seed=np.int64(seed), **meta),
                state_dict=model.state_dict(), message_hub=hub.state_dict(),
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1).state_dict())


def _save(checkpoint, path, checksum=True):
    if checksum:
        cs.add_checksum(checkpoint)
    torch.save(checkpoint, path)
    return str(path)


def _child(code, *args, timeout=180):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


# ------------------------------------------------------- 1. text from a checkpoint never runs
_MARKER_MODULE = 'mmnorm_attack_marker_module'


@pytest.mark.parametrize('payload', ['code', 'custom_imports', 'base'])
def test_the_saved_config_text_is_read_as_data_never_executed(tmp_path, monkeypatch, payload):
    """tools/test.py's check compared the saved config through Config.fromstring, which runs
    the text (and imports its custom_imports, reads its _base_ files)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmnorm_plugin.apis import check_test_checkpoint
    marker = tmp_path / 'ran'
    (tmp_path / f'{_MARKER_MODULE}.py').write_text(f'open({str(marker)!r}, "w").close()\n')
    (tmp_path / 'evil_base.py').write_text(f'import os\nos.system("touch {marker}")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = Config.fromfile(FASTER_BN)
    text = {'code': f"_x = __import__('os').system('touch {marker}')\n",
            'custom_imports': f"custom_imports = dict(imports=['{_MARKER_MODULE}'])\n",
            'base': f"_base_ = ['{tmp_path / 'evil_base.py'}']\n"}[payload]
    saved = copy.deepcopy(cfg._cfg_dict.to_dict()['model'])
    saved['neck']['out_channels'] = 48  # a difference the comparison must still report
    text += f'model = {saved!r}\n'
    init_default_scope('mmdet')
    model = MODELS.build(copy.deepcopy(cfg.model))
    ckpt = _save(dict(state_dict=model.state_dict(), meta=dict(cfg=text)),
                 tmp_path / 'ckpt.pth', checksum=False)
    warning = check_test_checkpoint(cfg, ckpt, FASTER_BN)
    assert not marker.exists(), f'the saved config text ran ({payload})'
    assert _MARKER_MODULE not in sys.modules
    assert "model.neck.out_channels: checkpoint 48 vs config" in warning, warning


def test_literal_reading_gives_what_mmengine_reads_for_a_real_saved_config():
    from mmnorm_plugin.checkpoint.config_text import literal_assignments
    for name in ('faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py',
                 'mask-rcnn_r18-w16_fpn_bn_tiny-coco.py'):
        text = Config.fromfile(osp.join(ROOT, 'configs', 'demo', name)).pretty_text
        values, problems = literal_assignments(text)
        assert not problems, problems
        assert values['model'] == Config.fromstring(text, '.py').to_dict()['model']


def test_meta_config_is_removed_before_the_runner_reads_it(tmp_path):
    """Runner.resume runs Config.fromstring(meta['config']); the guarded loader removes it
    (after verifying the checksum, which covers it) and says so."""
    from mmnorm_plugin.engine import guarded
    marker = tmp_path / 'ran'
    path = _save(_runner_checkpoint(config=f"__import__('os').system('touch {marker}')"),
                 tmp_path / 'iter_3.pth')
    checkpoint = CheckpointLoader.load_checkpoint(guarded(path), map_location='cpu')
    assert 'config' not in checkpoint['meta'] and checkpoint['meta']['iter'] == 3
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert not marker.exists()


# ---------------------------------------------------- 2. nothing callable is allow-listed
_ATTACK_CHILD = '''
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import hostile_pickles as hp
    import mmnorm_plugin
    from mmnorm_plugin.checkpoint.loading import mmengine_checkpoint_loading
    from mmnorm_plugin.checkpoint import safety as cs
    mode, path = sys.argv[2:4]
    secret = os.urandom(24) + b'the secret'
    address = 0x10 if mode == 'segv' else id(secret) + sys.getsizeof(b'') - 1
    open(path, 'wb').write(hp.torch_zip(hp.history_buffer_attack(address, len(secret))))
    try:
        with mmengine_checkpoint_loading():
            leaked = cs.load_verified_checkpoint(path)['leak']._log_history
        print('LOADED', 'LEAKED' if secret in leaked.astype('u1').tobytes() else '')
    except Exception as err:
        print('REFUSED', type(err).__name__, str(err))
'''


@pytest.mark.parametrize('mode', ['read', 'segv'])
def test_the_history_buffer_memory_read_is_refused(tmp_path, mode):
    """The issue's attack: NEWOBJ a HistoryBuffer, BUILD an __array_interface__ onto it,
    HistoryBuffer([that], [0], 10). Before: the secret's bytes were read (read), the process
    died of SIGSEGV (segv, rc -11)."""
    path = tmp_path / f'{mode}.pth'
    out = _child(_ATTACK_CHILD, HERE, mode, path)
    assert out.returncode == 0, f'rc {out.returncode}: {out.stderr[-2000:]}'
    [line] = out.stdout.strip().splitlines()
    assert line.startswith('REFUSED RefusedCheckpoint') and str(path) in line, line
    assert '__array_interface__' in line and 'HistoryBuffer' in line, line


@pytest.mark.parametrize('stream', ['reduce', 'newobj_args'])
def test_history_buffer_is_never_called_with_file_data(stream):
    from mmnorm_plugin.checkpoint.loading import load_checkpoint_bytes
    ops = hp.Ops().glob(*hp.HISTORY_BUFFER)
    ops.op(pickle.EMPTY_LIST).op(pickle.EMPTY_LIST).integer(10).op(pickle.TUPLE3)
    ops.op(pickle.REDUCE if stream == 'reduce' else pickle.NEWOBJ)
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer.*with arguments'):
        load_checkpoint_bytes(hp.torch_zip(ops.stop()), 'x.pth')


def test_old_format_runner_checkpoints_still_load_as_real_objects(tmp_path):
    path = _save(_runner_checkpoint(seed=5), tmp_path / 'old.pth')
    checkpoint = cs.load_verified_checkpoint(path)
    buffer = checkpoint['message_hub']['log_scalars']['train/loss']
    assert type(buffer) is HistoryBuffer and buffer.mean() == pytest.approx(1.5)
    assert buffer.max_length == 1000000 and set(vars(buffer)) == {
        'max_length', '_log_history', '_count_history'}
    assert type(checkpoint['meta']['seed']) is np.int64 and checkpoint['meta']['seed'] == 5
    assert cs.was_verified(path)


# ------------------------------------------------- 3. per-load scope, trust names one file
_THREAD_CHILD = '''
    import sys, threading, torch
    sys.path.insert(0, sys.argv[1])
    import hostile_pickles as hp
    import mmnorm_plugin
    from mmnorm_plugin.checkpoint.loading import mmengine_checkpoint_loading
    path = sys.argv[2]
    open(path, 'wb').write(hp.torch_zip(hp.history_buffer_attack(0x10, 64)))
    inside, done = threading.Event(), threading.Event()

    def our_load():
        with mmengine_checkpoint_loading():
            inside.set()
            done.wait(60)

    thread = threading.Thread(target=our_load)
    thread.start()
    inside.wait(60)
    try:
        torch.load(path)  # another thread's plain load, while ours is in progress
        print('LOADED')
    except Exception as err:
        print('REFUSED', type(err).__name__)
    finally:
        done.set()
        thread.join()
'''


def test_another_threads_load_during_ours_cannot_reach_history_buffer(tmp_path):
    """Before: while our scope was open, every thread's torch.load accepted HistoryBuffer
    (the child died of SIGSEGV)."""
    out = _child(_THREAD_CHILD, HERE, tmp_path / 'segv.pth')
    assert out.returncode == 0, f'rc {out.returncode}: {out.stderr[-2000:]}'
    assert out.stdout.split() == ['REFUSED', 'UnpicklingError'], out.stdout


def test_entries_others_add_during_our_load_stay():
    """Before: the scope restored its snapshot, wiping entries added meanwhile."""
    class Theirs:
        pass
    inside, done = threading.Event(), threading.Event()

    def our_load():
        with mmengine_checkpoint_loading():
            inside.set()
            done.wait(60)

    before = torch.serialization.get_safe_globals()
    thread = threading.Thread(target=our_load)
    thread.start()
    try:
        inside.wait(60)
        torch.serialization.add_safe_globals([Theirs])
    finally:
        done.set()
        thread.join()
    try:
        after = torch.serialization.get_safe_globals()
        assert Theirs in after and all(g in after for g in before)
        assert len(after) == len(before) + 1  # and nothing of ours left
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def test_overlapping_trusted_loads_leave_nothing_behind(tmp_path):
    """Before: two overlapping --unsafe-load scopes exiting in enter order left the allow-list
    entries and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 behind; later plain loads ran code."""
    from mmnorm_plugin.checkpoint.loading import load_checkpoint_bytes, trusted_checkpoints
    marker = tmp_path / 'ran'
    payload = _save(dict(meta=dict(x=_System(f'touch {marker}'))), tmp_path / 'payload.pth',
                    checksum=False)
    trusted = [_save(dict(meta=dict(args=argparse.Namespace(a=i))), tmp_path / f'{i}.pth',
                     checksum=False) for i in range(2)]
    before = (torch.serialization.get_safe_globals(),
              os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'))
    barrier = threading.Barrier(2)
    first_out = threading.Event()
    results = {}

    def load(i):
        with trusted_checkpoints([trusted[i]]):
            barrier.wait(60)  # both inside
            if i == 1:
                first_out.wait(60)  # leave in enter order
            with open(trusted[i], 'rb') as f:
                results[i] = load_checkpoint_bytes(f.read(), trusted[i])['meta']['args'].a
        if i == 0:
            first_out.set()

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {0: 0, 1: 1}
    assert (torch.serialization.get_safe_globals(),
            os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')) == before
    with pytest.raises(pickle.UnpicklingError):
        torch.load(payload)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint_bytes(open(payload, 'rb').read(), payload)
    assert not marker.exists()


def test_trust_is_for_the_named_file_only(tmp_path):
    """Before: --unsafe-load trusted every load of the run, so a Pretrained file next to the
    trusted --resume file ran its payload."""
    from mmnorm_plugin.checkpoint.loading import RefusedCheckpoint, trusted_checkpoints
    marker = tmp_path / 'ran'
    trusted = _save(dict(meta=dict(args=argparse.Namespace(a=1))), tmp_path / 'trusted.pth')
    payload = _save(dict(meta=dict(x=_System(f'touch {marker}'))), tmp_path / 'pretrained.pth',
                    checksum=False)
    with trusted_checkpoints([trusted]):
        assert cs.load_verified_checkpoint(trusted)['meta']['args'].a == 1
        with pytest.raises(RefusedCheckpoint) as err:
            cs.load_verified_checkpoint(payload)
    assert not marker.exists()
    assert str(err.value).startswith(f'checkpoint {payload}: refused the global posix.system')
    assert 'system' in str(err.value) and f'--unsafe-load {payload}' in str(err.value)


def test_unsafe_load_of_a_url_trusts_that_download_only(tmp_path, monkeypatch):
    import functools
    import http.server

    from mmnorm_plugin.checkpoint.loading import RefusedCheckpoint, trusted_checkpoints
    from mmnorm_plugin.engine import guarded
    _save(dict(meta=dict(args=argparse.Namespace(a=1))), tmp_path / 'foreign.pth', checksum=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    for key in ('http_proxy', 'HTTP_PROXY'):
        monkeypatch.delenv(key, raising=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f'http://127.0.0.1:{server.server_address[1]}/foreign.pth'
    try:
        with pytest.raises(RefusedCheckpoint, match='the global argparse.Namespace'):
            CheckpointLoader.load_checkpoint(guarded(url), map_location='cpu')
        with trusted_checkpoints([url]):
            checkpoint = CheckpointLoader.load_checkpoint(guarded(url), map_location='cpu')
    finally:
        server.shutdown()
        server.server_close()
    assert checkpoint['meta']['args'].a == 1


@pytest.mark.parametrize('obj, refused', [
    (argparse.Namespace(a=1), 'the global argparse.Namespace'),
    (np.array(['a'], dtype=object), "numpy.dtype('O8'"),
])
def test_a_refusal_is_one_line_naming_the_file_and_what_was_refused(tmp_path, obj, refused):
    path = _save(dict(state_dict={}, meta=dict(x=obj)), tmp_path / 'foreign.pth', checksum=False)
    with mmengine_checkpoint_loading(), pytest.raises(pickle.UnpicklingError) as err:
        cs.load_verified_checkpoint(path)
    message = str(err.value)
    assert '\n' not in message and path in message and refused in message, message


# --------------------------------------------------------------------------- 4. integrity
def test_the_checksum_covers_meta(tmp_path):
    """Before: meta was outside the checksum; an edited meta['iter'] resumed at the wrong
    iteration with "checksum verified"."""
    checkpoint = cs.add_checksum(_runner_checkpoint())
    checkpoint['meta']['iter'] = 300  # re-saved: zip CRCs valid, only the checksum can tell
    path = _save(checkpoint, tmp_path / 'iter_3.pth', checksum=False)
    with mmengine_checkpoint_loading():  # (needed before issue 28; harmless now)
        problem = cs.checkpoint_problem(path)
    assert problem and 'SHA-256 of its meta differs' in problem, problem
    assert not cs.was_verified(path)


def test_a_flipped_byte_in_meta_is_caught_by_the_zip_crc(tmp_path):
    """Before: the CRCs were read only after an unpickling error; a flipped byte in
    meta['iter'] loaded (and verified)."""
    checkpoint = _runner_checkpoint()
    checkpoint['meta']['iter'] = 1234567
    path = _save(checkpoint, tmp_path / 'iter_3.pth')
    data = bytearray(open(path, 'rb').read())
    at = data.index(pickle.BININT + struct.pack('<i', 1234567))
    data[at + 1:at + 5] = struct.pack('<i', 7654321)
    open(path, 'wb').write(bytes(data))
    with mmengine_checkpoint_loading():
        problem = cs.checkpoint_problem(path)
    assert problem and 'CRC-32' in problem and '/data.pkl' in problem, problem


def test_a_damaged_zip64_directory_is_reported_as_damage(tmp_path):
    # found by the fuzz harness (--seed 1): zipfile.is_zipfile itself raises for it
    path = _save(_runner_checkpoint(), tmp_path / 'iter_3.pth')
    data = bytearray(open(path, 'rb').read())
    at = data.rindex(b'PK\x06\x07')  # zip64 end-of-directory locator: number of disks
    data[at + 16:at + 20] = struct.pack('<I', 2)
    open(path, 'wb').write(bytes(data))
    problem = cs.checkpoint_problem(path)
    assert problem and 'zip directory is damaged' in problem and '\n' not in problem, problem


def test_a_file_changed_in_place_with_its_mtime_restored_is_hashed_again(
        tmp_path, overwrite_tensor_bytes):
    """Before: verification was cached by (path, size, mtime, inode)."""
    path = _save(_runner_checkpoint(), tmp_path / 'iter_3.pth')
    with mmengine_checkpoint_loading():
        assert cs.checkpoint_problem(path) is None and cs.was_verified(path)
        st = os.stat(path)
        overwrite_tensor_bytes(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(path).st_ino == st.st_ino and os.stat(path).st_size == st.st_size
        assert 'SHA-256' in (cs.checkpoint_problem(path) or '')
    assert not cs.was_verified(path)


def test_what_is_verified_is_what_is_loaded(tmp_path):
    """The guarded loader hashes the object it unpickled from the bytes it read, so a file
    swapped after an earlier check is caught at the load itself."""
    from mmnorm_plugin.engine import guarded
    path = _save(_runner_checkpoint(), tmp_path / 'iter_3.pth')
    assert cs.checkpoint_problem(path) is None  # the check a tool makes first
    tampered = torch.load(path, weights_only=False)
    tampered['state_dict']['0.weight'].add_(1)
    torch.save(tampered, path)  # swapped afterwards; the old checksum travels along
    with pytest.raises(cs.DamagedCheckpoint, match='SHA-256 of its state_dict'):
        CheckpointLoader.load_checkpoint(guarded(path), map_location='cpu')


def test_old_algorithm_checkpoints_verify_by_it_and_say_so(tmp_path):
    import hashlib
    checkpoint = _runner_checkpoint()
    sections = sorted(k for k in checkpoint if k != 'meta')

    def digest(name):
        h = hashlib.sha256()
        cs._feed_v1(h, name, checkpoint[name])
        return h.hexdigest()
    checkpoint['meta']['checksum'] = dict(algorithm='sha256/tensors-v1',
                                          sections={s: digest(s) for s in sections})
    path = _save(checkpoint, tmp_path / 'v1.pth', checksum=False)
    _, status = cs.load_verified_checkpoint(path, return_status=True)
    assert status == cs.VERIFIED_V1 and 'old algorithm sha256/tensors-v1' in cs.STATUS_TEXT[status]
    checkpoint['state_dict']['0.bias'].add_(1)
    torch.save(checkpoint, path)
    with pytest.raises(cs.DamagedCheckpoint, match='SHA-256 of its state_dict'):
        cs.load_verified_checkpoint(path)


# ------------------------------------------------------- our tools' other loading helpers
def test_the_hook_routes_resume_load_from_and_pretrained_through_the_guard(tmp_path):
    from types import SimpleNamespace

    from mmnorm_plugin.engine import GuardedCheckpointLoadHook, guarded
    backbone = torch.nn.Module()
    backbone.init_cfg = dict(type='Pretrained', checkpoint='pre.pth', prefix='backbone.')
    head = torch.nn.Module()
    head.init_cfg = [dict(type='Normal', std=0.01),
                     dict(type='Pretrained', checkpoint='torchvision://resnet18')]
    model = torch.nn.Sequential(backbone, head)
    (tmp_path / 'iter_4.pth').write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    for load_from, resume, expected in ((None, True, str(tmp_path / 'iter_4.pth')),
                                        ('a.pth', False, 'a.pth'), ('s3://b/c.pth', False, None)):
        runner = SimpleNamespace(_has_loaded=False, _load_from=load_from, _resume=resume,
                                 work_dir=str(tmp_path), model=model,
                                 logger=SimpleNamespace(debug=lambda *a: None))
        GuardedCheckpointLoadHook().before_run(runner)
        assert runner._load_from == (guarded(expected) if expected else load_from)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=guarded('pre.pth'),
                                     prefix='backbone.')
    assert head.init_cfg[1]['checkpoint'] == guarded('torchvision://resnet18')


def test_init_detector_verified_refuses_a_damaged_checkpoint(tmp_path, overwrite_tensor_bytes):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmnorm_plugin.apis import init_detector_verified
    cfg = Config.fromfile(FASTER_BN)
    init_default_scope('mmdet')
    model = MODELS.build(copy.deepcopy(cfg.model))
    path = _save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=['a']))),
                 tmp_path / 'det.pth')
    detector = init_detector_verified(cfg, path, device='cpu')
    assert detector.dataset_meta['classes'] == ['a']
    overwrite_tensor_bytes(path)
    with pytest.raises(cs.DamagedCheckpoint, match='SHA-256'):
        init_detector_verified(cfg, path, device='cpu')


def test_weights_only_records_are_rebuilt_from_validated_tensors_only():
    from mmnorm_plugin.engine import WeightsOnlyCheckpointHook
    from mmnorm_plugin.engine.weights_only_checkpoint import _BUFFER_TAG
    good = {_BUFFER_TAG: True, 'log': torch.tensor([1., 2.]), 'count': torch.tensor([1, 1]),
            'max_length': 10}
    for bad in (dict(good, log=torch.zeros(2, device='meta')), dict(good, max_length='10'),
                dict(good, count=torch.tensor([1])), dict(good, extra=1),
                dict(good, log=torch.tensor([1, 2]).to_sparse())):
        checkpoint = dict(message_hub=dict(log_scalars=dict(loss=bad)))
        with pytest.raises(pickle.UnpicklingError, match="refused.*'loss'"):
            WeightsOnlyCheckpointHook().after_load_checkpoint(None, checkpoint)
    checkpoint = dict(message_hub=dict(log_scalars=dict(loss=good)))
    WeightsOnlyCheckpointHook().after_load_checkpoint(None, checkpoint)
    assert checkpoint['message_hub']['log_scalars']['loss'].mean() == 1.5
