"""Issue 28's attacks through the real CLIs on the tiny dataset: tools/test.py, tools/train.py
--resume / load_from / init_cfg Pretrained, and a converter fetching a URL. Each failed on the
code before issue 28 (the marker was created, the process died of SIGSEGV, or a swapped file
evaluated silently). Unit-level versions: tests/test_checkpoint/test_checkpoint_attacks.py."""
import argparse
import functools
import http.server
import importlib.util
import os
import os.path as osp
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from mmnorm_plugin.checkpoint import safety as cs
from mmnorm_plugin.checkpoint.loading import mmengine_checkpoint_loading
from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py')
TRAIN, TEST = osp.join(ROOT, 'tools', 'train.py'), osp.join(ROOT, 'tools', 'test.py')
_spec = importlib.util.spec_from_file_location(
    'hostile_pickles', osp.join(ROOT, 'tests', 'test_checkpoint', 'hostile_pickles.py'))
hp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hp)

pytestmark = pytest.mark.slow

SWAP_HOOK = '''
import shutil
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SwapCheckpointHook(Hook):
    """Replaces the checkpoint after the checks of before_run, before the Runner loads it."""
    priority = 'LOWEST'

    def __init__(self, src, dst):
        self.src, self.dst = src, dst

    def before_run(self, runner):
        shutil.copy(self.src, self.dst)
'''


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp('attacks')
    make_tiny_coco(str(path / 'data' / 'tiny_coco'), num_train=8, num_val=4)
    (path / 'swap_hook.py').write_text(SWAP_HOOK)
    return path


def _env(cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(cwd), TORCH_HOME=str(cwd / 'torch'),
               no_proxy='127.0.0.1,localhost', NO_PROXY='127.0.0.1,localhost')
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    return env


def _run(args, cwd, ok=True):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=_env(cwd),
                          capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, f'rc {proc.returncode}\n' + (proc.stdout +
                                                                     proc.stderr)[-6000:]
    return proc


def _train_args(work_dir, iters, *extra, options=()):
    return [TRAIN, CONFIG, '--work-dir', work_dir, *extra, '--cfg-options',
            f'train_cfg.max_iters={iters}', 'default_hooks.checkpoint.interval=1',
            'default_hooks.logger.interval=1', 'val_cfg=None', 'val_dataloader=None',
            'val_evaluator=None', 'randomness.seed=0', *options]


def _last_line(proc):
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ''


def _load(path):
    with mmengine_checkpoint_loading():  # (needed before issue 28; harmless now)
        return torch.load(path, map_location='cpu', weights_only=False)


@pytest.fixture(scope='module')
def trained(workdir):
    """iter_1.pth of a 1-iteration run of our tools (checksum, weights-only format)."""
    work_dir = workdir / 'trained'
    _run(_train_args(work_dir, 1), cwd=workdir)
    return work_dir / 'iter_1.pth'


def test_test_tool_never_runs_the_saved_config_and_says_unverified(workdir, trained):
    marker = workdir / 'ran_cfg'
    checkpoint = _load(trained)
    checkpoint['meta'].pop('checksum')
    checkpoint['meta']['cfg'] = (f"_x = __import__('os').system('touch {marker}')\n"
                                 + checkpoint['meta']['cfg'])
    path = workdir / 'cfg_payload.pth'
    torch.save(checkpoint, path)
    proc = _run([TEST, CONFIG, path, '--work-dir', workdir / 'cfg_test'], cwd=workdir)
    assert not marker.exists(), 'the checkpoint ran its saved config'
    assert f'checkpoint {path}: it records no checksum, so it loads unverified' in \
        proc.stdout + proc.stderr


def test_test_tool_refuses_the_history_buffer_attack_in_one_line(workdir):
    path = workdir / 'segv.pth'
    path.write_bytes(hp.torch_zip(hp.history_buffer_attack(0x10, 64)))
    proc = _run([TEST, CONFIG, path, '--work-dir', workdir / 'segv_test'], cwd=workdir, ok=False)
    assert proc.returncode == 1, f'rc {proc.returncode} (-11/139: SIGSEGV)\n{proc.stderr[-3000:]}'
    assert _last_line(proc).startswith(f'checkpoint {path}: refused HistoryBuffer state') \
        and 'Traceback' not in proc.stderr, proc.stderr[-3000:]


def test_resume_never_runs_meta_config(workdir, trained):
    """mmengine's Runner.resume runs Config.fromstring(meta['config']); the checksum is no
    signature, so the attacker records a matching one."""
    run, marker = workdir / 'resume_config', workdir / 'ran_config'
    run.mkdir()
    checkpoint = _load(trained)
    checkpoint['meta']['config'] = f"_x = __import__('os').system('touch {marker}')\n"
    cs.add_checksum(checkpoint)
    torch.save(checkpoint, run / 'iter_1.pth')
    (run / 'last_checkpoint').write_text(str(run / 'iter_1.pth'))
    log = _run(_train_args(run, 2, '--resume'), cwd=workdir).stdout
    assert not marker.exists(), "--resume ran meta['config']"
    assert f"checkpoint {run / 'iter_1.pth'}: removed meta['config']" in log
    assert 'Iter(train) [2/2]' in log and 'Iter(train) [1/2]' not in log


def test_a_checkpoint_swapped_after_the_checks_is_caught_at_the_load(workdir, trained):
    path, tampered = workdir / 'swapped.pth', workdir / 'tampered.pth'
    shutil.copy(trained, path)
    checkpoint = _load(trained)
    key = next(k for k in checkpoint['state_dict'] if k.endswith('conv1.weight'))
    checkpoint['state_dict'][key].mul_(-1)  # the old checksum travels along
    torch.save(checkpoint, tampered)
    config = workdir / 'swap.py'
    config.write_text(textwrap.dedent(f"""\
        _base_ = '{CONFIG}'
        custom_imports = dict(imports=['mmnorm_plugin', 'swap_hook'], allow_failed_imports=False)
        custom_hooks = [dict(type='SwapCheckpointHook', src='{tampered}', dst='{path}')]
        """))
    proc = _run([TEST, config, path, '--work-dir', workdir / 'swap_test'], cwd=workdir, ok=False)
    assert _last_line(proc).startswith(f'checkpoint {path}: the SHA-256 of its state_dict'), \
        proc.stderr[-3000:]


def test_unsafe_load_trusts_the_named_file_only(workdir, trained):
    """--unsafe-load A with load_from=A and a Pretrained file B: B is still refused."""
    trusted, payload = workdir / 'trusted.pth', workdir / 'pretrained.pth'
    marker = workdir / 'ran_pretrained'
    checkpoint = _load(trained)
    checkpoint['meta']['note'] = argparse.Namespace(source='a file the user trusts')
    cs.add_checksum(checkpoint)
    torch.save(checkpoint, trusted)
    torch.save(dict(state_dict={}, meta=dict(x=_System(f'touch {marker}'))), payload)
    config = workdir / 'pretrained.py'
    config.write_text(textwrap.dedent(f"""\
        _base_ = '{CONFIG}'
        model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained',
                                                 checkpoint='{payload}')))
        load_from = '{trusted}'
        """))
    args = _train_args(workdir / 'trust_both', 1, '--unsafe-load', trusted)
    args[1] = config
    proc = _run(args, cwd=workdir, ok=False)
    assert not marker.exists(), 'the Pretrained payload ran'
    assert _last_line(proc).startswith(f'checkpoint {payload}: refused the global posix.system') \
        and f'--unsafe-load {payload}' in _last_line(proc), proc.stderr[-3000:]
    # the trusted file alone loads (with the full pickle machinery), a bare flag is refused
    log = _run(_train_args(workdir / 'trust_one', 1, '--unsafe-load', trusted,
                           options=[f'load_from={trusted}']), cwd=workdir).stdout
    assert f'checkpoint {trusted}: checksum verified' in log
    proc = _run(_train_args(workdir / 'bare', 1, '--unsafe-load'), cwd=workdir, ok=False)
    assert _last_line(proc).startswith('--unsafe-load takes the checkpoint to trust')


@pytest.fixture
def http_dir(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def test_a_downloaded_checkpoint_is_never_fully_unpickled(workdir, http_dir):
    """mmengine loads http(s)/torchvision/open-mmlab checkpoints through torch.hub with
    weights_only=False: before issue 28 a served payload ran in resnet_to_mabn.py (and in any
    init_cfg Pretrained URL)."""
    folder, url = http_dir
    marker = workdir / 'ran_url'
    torch.save(dict(state_dict={}, meta=dict(x=_System(f'touch {marker}'))), folder / 'r50.pth')
    proc = _run([osp.join(ROOT, 'tools', 'model_converters', 'resnet_to_mabn.py'),
                 f'{url}/r50.pth', workdir / 'mabn.pth'], cwd=workdir, ok=False)
    assert not marker.exists(), 'the downloaded payload ran'
    cached = workdir / 'torch' / 'hub' / 'checkpoints' / 'r50.pth'
    assert _last_line(proc).startswith(f'checkpoint {cached}: refused the global posix.system'), \
        proc.stderr[-3000:]
