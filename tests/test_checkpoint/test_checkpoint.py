"""Checkpoint loading: Runner checkpoints load in our scoped allow-list; nothing else widens.

The poison-file test reproduces a real attack on the previous design (``builtins.getattr`` on
torch's allow-list at import): a weights-only file that reaches ``torch.serialization``'s
globals through ``_get_layout.__globals__`` and turns the weights-only default off for the
whole process, after which a second file's ``os.system`` payload runs.
"""
import argparse
import io
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.checkpoint.legacy_objects import _HistoryBufferRecipe, _statistic_name
from mmnorm_plugin.checkpoint.loading import (load_checkpoint_bytes, mmengine_checkpoint_loading,
                                              trusted_checkpoints, unsafe_load_message)


def _runner_like_checkpoint(model):
    hub = MessageHub('test_checkpoint_hub')
    for i in range(3):
        hub.update_scalar('train/loss', float(i) + 0.5)
    hub.update_info('iter', 3)
    return dict(
        meta=dict(epoch=1, iter=3, seed=np.int64(7), mmengine_version='0.10.7',
                  dataset_meta=dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)]),
                  experiment_name='x', time='now'),
        state_dict=model.state_dict(),
        message_hub=hub.state_dict(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict(),
        param_schedulers=[dict(base_values=[0.1], last_step=3, verbose=False)])


def test_weights_only_is_still_on():
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') in (None, '', '0')


def test_runner_checkpoint_round_trip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / 'ckpt.pth'
    torch.save(_runner_like_checkpoint(model), path)
    with pytest.raises(pickle.UnpicklingError):  # outside our scope: torch's defaults
        _load_checkpoint(str(path), map_location='cpu')
    with mmengine_checkpoint_loading():
        ckpt = _load_checkpoint(str(path), map_location='cpu')
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert ckpt['message_hub']['log_scalars']['train/loss'].mean() == pytest.approx(1.5)
    assert ckpt['meta']['seed'] == 7
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with mmengine_checkpoint_loading():
        load_checkpoint(fresh, str(path), map_location='cpu')
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


class _Payload:
    """Stands for any object a malicious or foreign checkpoint could carry."""

    def __reduce__(self):
        return (print, ('this must never run',))


@pytest.mark.parametrize('payload', [_Payload(), argparse.Namespace(a=1)])
def test_unexpected_pickled_objects_are_refused(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, meta=dict(x=payload)), path)
    with mmengine_checkpoint_loading(), pytest.raises(pickle.UnpicklingError) as err:
        _load_checkpoint(str(path), map_location='cpu')
    assert '--unsafe-load' in unsafe_load_message(err.value)


def test_unsafe_load_is_scoped_to_the_block(tmp_path):
    # the trust is for the named file, inside the block, and never switches torch's default
    path = tmp_path / 'trusted.pth'
    torch.save(dict(state_dict={}, meta=dict(args=argparse.Namespace(a=1))), path)
    data = path.read_bytes()
    with trusted_checkpoints([str(path)]):
        assert load_checkpoint_bytes(data, str(path))['meta']['args'].a == 1
        assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') in (None, '', '0')
        with pytest.raises(pickle.UnpicklingError):  # mmengine's own load: weights-only
            _load_checkpoint(str(path), map_location='cpu')
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') in (None, '', '0')
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint_bytes(data, str(path))
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(path), map_location='cpu')


def test_the_scope_restores_the_callers_allow_list_exactly():
    class Mine:
        pass
    torch.serialization.add_safe_globals([Mine, np.ndarray])
    try:
        before = set(map(repr, torch.serialization.get_safe_globals()))
        with mmengine_checkpoint_loading():
            assert len(torch.serialization.get_safe_globals()) > len(before)
        assert set(map(repr, torch.serialization.get_safe_globals())) == before
    finally:
        torch.serialization.clear_safe_globals()


@pytest.mark.parametrize('owner, name', [
    (getattr, '__self__'), (torch.serialization._get_layout, '__globals__'),
    (_HistoryBufferRecipe, '__init__'), (_HistoryBufferRecipe, '__class__'), (os, 'system'),
    (_HistoryBufferRecipe, 1), (HistoryBuffer, 'mean')])
def test_the_getattr_stand_in_serves_history_buffer_statistics_only(owner, name):
    # it gives the name of a registered statistics method, never an attribute of anything
    assert _statistic_name(_HistoryBufferRecipe, 'mean') == 'mean'
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        _statistic_name(owner, name)


def _poison_pickle() -> bytes:
    """Protocol-2 opcodes: ``getattr`` -> builtins.callable -> torch.serialization's globals,
    where ``_default_to_weights_only`` is replaced (every global named is allow-listed by torch
    or, under the old design, by the plugin)."""
    out = io.BytesIO()
    w = out.write

    def text(value):
        w(pickle.BINUNICODE + len(value).to_bytes(4, 'little') + value.encode())
    w(pickle.PROTO + b'\x02' + pickle.MARK)
    w(pickle.GLOBAL + b'builtins\ngetattr\n' + pickle.BINPUT + b'\x00')
    w(pickle.BINGET + b'\x00' + pickle.BINGET + b'\x00')
    text('__self__')
    w(pickle.TUPLE2 + pickle.REDUCE + pickle.BINPUT + b'\x01')  # the builtins module
    w(pickle.BINGET + b'\x00' + pickle.BINGET + b'\x01')
    text('callable')
    w(pickle.TUPLE2 + pickle.REDUCE + pickle.BINPUT + b'\x02')  # builtins.callable
    w(pickle.BINGET + b'\x00' + pickle.GLOBAL + b'torch.serialization\n_get_layout\n')
    text('__globals__')
    w(pickle.TUPLE2 + pickle.REDUCE)  # torch.serialization's module dict
    text('_default_to_weights_only')
    w(pickle.BINGET + b'\x02' + pickle.SETITEM + pickle.TUPLE + pickle.STOP)
    return out.getvalue()


def _write_with_pickle(path, data_pkl: bytes):
    """A torch zip checkpoint whose ``data.pkl`` is ``data_pkl``."""
    buf = io.BytesIO()
    torch.save({}, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info.filename, data_pkl if info.filename.endswith('/data.pkl') else data)


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


_ATTACK = textwrap.dedent('''
    import contextlib, os, sys, torch
    from mmengine.runner.checkpoint import _load_checkpoint
    mode, poison, payload, marker = sys.argv[1:]
    default = torch.serialization._default_to_weights_only
    if mode == 'old-allow-list':
        torch.serialization.add_safe_globals([getattr])
        scope = contextlib.nullcontext()
    else:
        import mmnorm_plugin
        from mmnorm_plugin.checkpoint.loading import mmengine_checkpoint_loading
        scope = mmengine_checkpoint_loading() if mode == 'tool-scope' else contextlib.nullcontext()
    with scope:
        for path in (poison, payload):
            try:
                _load_checkpoint(path, map_location='cpu')
            except Exception as err:
                print('refused', path, type(err).__name__)
    print('default intact:', torch.serialization._default_to_weights_only is default)
    print('payload ran:', os.path.exists(marker))
''')


@pytest.mark.parametrize('mode', ['plugin-imported', 'tool-scope', 'old-allow-list'])
def test_poisoned_checkpoint_cannot_switch_off_weights_only(tmp_path, mode):
    poison, payload, marker = tmp_path / 'poison.pth', tmp_path / 'payload.pth', tmp_path / 'ran'
    _write_with_pickle(poison, _poison_pickle())
    torch.save(dict(state_dict={}, meta=dict(x=_System(f'touch {marker}'))), payload)
    out = subprocess.run([sys.executable, '-c', _ATTACK, mode, str(poison), str(payload),
                          str(marker)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if mode == 'old-allow-list':  # the attack is real: it works against the old design
        assert 'payload ran: True' in out.stdout, out.stdout
        return
    assert f'refused {poison} UnpicklingError' in out.stdout, out.stdout
    assert f'refused {payload} UnpicklingError' in out.stdout, out.stdout
    assert 'default intact: True' in out.stdout and 'payload ran: False' in out.stdout
    assert not marker.exists()


def test_importing_the_plugin_leaves_torch_load_unchanged():
    code = textwrap.dedent('''
        import os, torch
        import mmdet.models, mmengine.runner, torch.distributed.tensor  # they add their own
        def state():
            return (sorted(map(repr, torch.serialization.get_safe_globals())),
                    torch.serialization._default_to_weights_only(None),
                    os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'))
        before = state()
        import mmnorm_plugin, mmnorm_plugin.apis, mmnorm_plugin.converters
        print(before == state(), before[1])
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ['True', 'True'], out.stdout + out.stderr
