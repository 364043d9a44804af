"""cfg.sync_bn with the plugin's norms: CBN/BGN/BKN become their synced variants (and revert
back); MABN, which has none, is refused by our tools and kept (with a warning) elsewhere."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmcv.cnn import build_norm_layer
from mmengine.config import Config
from mmengine.registry import MODELS
from torch import nn

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.distributed import sync_bn as sync_mod
from mmnorm_plugin.validation.norm_cfg import norm_cfg_types
from mmnorm_plugin.distributed.sync_bn import check_sync_bn_cfg, guarded_convert_sync_batchnorm

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CBN_DEMO = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py')
MABN_DEMO = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_mabn_tiny-coco.py')
BN_DEMO = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py')


def _net(norm_type):
    return nn.Sequential(nn.Conv2d(3, 32, 3), build_norm_layer(dict(type=norm_type), 32)[1],
                         nn.Conv2d(32, 8, 3), nn.BatchNorm2d(8))


def test_config_check_refuses_mabn_only_and_names_the_fix():
    cfg = Config.fromfile(MABN_DEMO)
    cfg.sync_bn = 'torch'
    with pytest.raises(ValueError) as err:
        check_sync_bn_cfg(cfg, norm_cfg_types(cfg.model))
    message = str(err.value)
    assert "'backbone.norm_cfg' (MABN)" in message and 'remove sync_bn' in message
    assert "type='SyncBN'" in message and 'per-GPU moving averages by design' in message
    for path in (BN_DEMO, CBN_DEMO):  # BN: mmengine's conversion; CBN: SyncCBN
        other = Config.fromfile(path)
        other.sync_bn = 'torch'
        check_sync_bn_cfg(other, norm_cfg_types(other.model))
    cfg.sync_bn = None
    check_sync_bn_cfg(cfg, norm_cfg_types(cfg.model))


def test_guarded_conversion_keeps_mabn_and_converts_bn():
    net = _net('MABN')
    ours = net[1]
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.warns(UserWarning, match="MABN.*kept UNCONVERTED.*: 1"):
        out = guarded_convert_sync_batchnorm(net, 'torch')
    assert out[1] is ours and type(out[1]) is MODELS.get('MABN')
    assert all(torch.equal(v, out[1].state_dict()[k]) for k, v in state.items())
    assert isinstance(out[3], nn.SyncBatchNorm)  # everything else: mmengine's conversion


@pytest.mark.parametrize('norm_type', ['CBN', 'BGN', 'BKN'])
def test_sync_bn_converts_to_the_synced_variant_and_revert_converts_back(norm_type):
    net = _net(norm_type)
    ours = net[1]
    net(torch.randn(2, 3, 8, 8)).sum().backward()  # some state (CBN: a window)
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    out = guarded_convert_sync_batchnorm(net, 'torch')
    synced = out[1]
    assert type(synced) is MODELS.get(f'Sync{norm_type}') and synced.weight is ours.weight
    assert state.keys() == synced.state_dict().keys()
    assert all(torch.equal(v, synced.state_dict()[k]) for k, v in state.items())
    assert isinstance(out[3], nn.SyncBatchNorm)
    # a synced variant already there is kept by a second conversion
    assert guarded_convert_sync_batchnorm(out, 'torch')[1] is synced
    from mmengine.model import revert_sync_batchnorm
    from mmengine.runner import Runner
    revert = Runner.wrap_model.__globals__['revert_sync_batchnorm']
    assert revert._mmnorm_guard
    back = revert(out)
    assert type(back[1]) is MODELS.get(norm_type) and back[1].weight is ours.weight
    assert all(torch.equal(v, back[1].state_dict()[k]) for k, v in state.items())
    assert type(back[3]).__name__ == '_BatchNormXd'
    # mmengine's own revert (unguarded) leaves ours alone: they are not SyncBatchNorm
    assert type(revert_sync_batchnorm(guarded_convert_sync_batchnorm(_net(norm_type)))[1]) is \
        MODELS.get(f'Sync{norm_type}')


def test_runner_and_mmdet_apis_use_the_guarded_conversion_and_revert():
    import importlib
    from mmengine.runner import Runner
    assert getattr(Runner.wrap_model.__globals__['convert_sync_batchnorm'], '_mmnorm_guard')
    for name in ('mmengine.runner.runner', 'mmengine._strategy.single_device',
                 'mmdet.apis.inference', 'mmdet.apis.det_inferencer'):
        module = importlib.import_module(name)
        assert getattr(module.revert_sync_batchnorm, '_mmnorm_guard', False), name


def test_a_synced_variant_in_the_table_replaces_refusal_by_conversion(monkeypatch):
    from mmnorm_plugin.norms.cbn import CBN

    class FakeSyncCBN(CBN):
        @classmethod
        def from_unsynced(cls, module):
            new = cls(module.num_features)
            new.load_state_dict(module.state_dict())
            return new

    MODELS.register_module('FakeSyncCBN_test', module=FakeSyncCBN, force=True)
    monkeypatch.setitem(sync_mod.SYNC_VARIANTS, 'CBN', 'FakeSyncCBN_test')
    cfg = Config.fromfile(CBN_DEMO)
    cfg.sync_bn = 'torch'
    check_sync_bn_cfg(cfg, norm_cfg_types(cfg.model))  # no refusal any more
    out = guarded_convert_sync_batchnorm(_net('CBN'), 'torch')
    assert type(out[1]) is FakeSyncCBN and isinstance(out[3], nn.SyncBatchNorm)


def test_train_tool_refuses_sync_bn_with_mabn_when_distributed(tmp_path):
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), MABN_DEMO, '--launcher', 'pytorch',
         '--work-dir', str(tmp_path), '--cfg-options', 'sync_bn=torch'],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cfg.sync_bn='torch' converts every _BatchNorm subclass" in proc.stderr
    assert 'Fix: remove sync_bn' in proc.stderr


@pytest.mark.parametrize('demo,expected,warned', [(CBN_DEMO, "['SyncCBN']", False),
                                                   (MABN_DEMO, "['MABN']", True)])
def test_a_runner_built_with_sync_bn_converts_or_keeps_plugin_norms(tmp_path, demo, expected,
                                                                     warned):
    """mmdet's shipped train.py path: Runner.from_cfg with sync_bn='torch', distributed."""
    code = f"""
import socket, warnings
import torch.distributed as dist
from mmengine.config import Config
from mmengine.runner import Runner
s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{{port}}', rank=0, world_size=1)
import os; os.environ.setdefault('LOCAL_RANK', '0')
cfg = Config.fromfile({demo!r})  # its custom_imports import the plugin, as in mmdet's tool
cfg.update(dict(launcher='pytorch', sync_bn='torch', work_dir={str(tmp_path)!r},
                model_wrapper_cfg=dict(type='AnyDeviceDDP')))
import mmnorm_plugin.apis  # AnyDeviceDDP (CPU); mmdet's tool on GPU needs nothing of this
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    runner = Runner.from_cfg(cfg)
types = {{type(m).__name__ for m in runner.model.module.modules()}}
print('TYPES', sorted(t for t in types if 'Norm' in t or 'BN' in t))
print('WARNED', any('kept UNCONVERTED' in str(w.message) for w in caught))
dist.destroy_process_group()
"""
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=180, cwd=str(tmp_path),
                          env=dict(__import__('os').environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"TYPES {expected}" in proc.stdout and f'WARNED {warned}' in proc.stdout
    assert ('kept UNCONVERTED' in proc.stdout + proc.stderr) == warned  # in the Runner's log
