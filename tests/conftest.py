import os

import pytest
import torch

# Tests are CPU-bound on a 2-core machine: one intra-op thread keeps parallel jobs from
# oversubscribing and keeps float reductions deterministic.
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def git_head():
    """The checkout's ``git rev-parse HEAD``: the commit a study record must name (skips where
    the tests run outside a git checkout, which records as ``commit: None``)."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                          text=True).stdout.strip()
    if not head:
        pytest.skip('not a git checkout')
    return head


@pytest.fixture(scope='session')
def run_ranks(tmp_path_factory):
    """``run_ranks(test_file, function, world_size=2)``: run ``function(rank, world_size)`` of
    ``test_file`` in ``world_size`` processes joined in a gloo group; returns what each rank's
    call returned (a dict, plus ``_all_reduce_calls``), in rank order. Session-scoped, so a
    module-scoped fixture can launch once for all the tests of its module."""
    import socket
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    worker = os.path.join(root, 'tests', 'gloo_worker.py')

    def run(test_file, function, world_size=2, timeout=300):
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = str(s.getsockname()[1])
        env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS='1')
        tmp_path = tmp_path_factory.mktemp('ranks')
        outs = [tmp_path / f'{function}_rank{r}.pth' for r in range(world_size)]
        procs = [subprocess.Popen([sys.executable, worker, str(r), str(world_size), port,
                                   str(test_file), function, str(outs[r])], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for r in range(world_size)]
        logs = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                raise
            logs.append(out + err)
        for r, proc in enumerate(procs):
            assert proc.returncode == 0, f'rank {r} failed:\n' + logs[r][-6000:]
        return [torch.load(out, weights_only=False) for out in outs]

    return run


@pytest.fixture(scope='session')
def overwrite_tensor_bytes():
    """``overwrite_tensor_bytes(path)``: overwrite 8 bytes inside the largest tensor of the
    torch zip checkpoint ``path`` in place, as a flipped disk block would; the file still
    loads (torch does not check its records' CRCs). Returns the record's name."""
    import struct
    import zipfile

    def overwrite(path):
        with zipfile.ZipFile(path) as zf:
            record = max((i for i in zf.infolist() if '/data/' in i.filename),
                         key=lambda i: i.file_size)
        with open(path, 'r+b') as f:
            f.seek(record.header_offset)
            header = f.read(30)  # local header: name and extra lengths at bytes 26..30
            name_len, extra_len = struct.unpack('<HH', header[26:30])
            start = record.header_offset + 30 + name_len + extra_len
            f.seek(start + record.file_size // 2)
            old = f.read(8)
            f.seek(start + record.file_size // 2)
            f.write(bytes(b ^ 0xFF for b in old))
        return record.filename

    return overwrite


@pytest.fixture(scope='session')
def mmpretrain():
    """mmpretrain with all its modules registered; skips where it does not import (the
    ``pretrain`` extra is missing, or torchvision is not the build of the installed torch)."""
    try:
        import mmpretrain as package
        from mmpretrain.utils import register_all_modules
        register_all_modules(False)
    except ImportError as err:
        pytest.skip(f'mmpretrain does not import ({err}): `MMNORM_EXTRAS=pretrain make install`')
    return package
