"""Deployment converter: every plugin norm becomes the BN computing its eval function, the
converted detector loads in plain mmdet (no plugin importable) and predicts the same boxes."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmcv.cnn import fuse_conv_bn
from mmengine.config import Config
from mmengine.registry import MODELS
from torch import nn

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.deploy import convert_config, convert_norms_to_bn, equivalent_batchnorm
from mmnorm_plugin.models.layers.cen_conv import CenConv2d
from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.bkn import BKN
from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.mabn import MABN

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_{}_tiny-coco.py')

NORMS = {
    'CBN': lambda c: CBN(c, buffer_num=2),
    'CBN-eps-outside': lambda c: CBN(c, buffer_num=2, eps=1e-2, eps_outside_sqrt=True),
    'MABN': lambda c: MABN(c, buffer_size=2, warmup_iters=1, renorm_hold_iters=1),
    'BGN': lambda c: BGN(c, num_groups=4),
    'BKN': lambda c: BKN(c),
    # synced variants: outside a process group they train as their norm; eval is BN's
    'SyncCBN': lambda c: MODELS.get('SyncCBN')(c, buffer_num=2),
    'SyncBGN': lambda c: MODELS.get('SyncBGN')(c, num_groups=4),
    'SyncBKN': lambda c: MODELS.get('SyncBKN')(c),
}


def _trained_block(make_norm, conv_type=nn.Conv2d):
    """conv -> norm -> relu -> conv -> norm, a few training steps so the statistics are
    non-trivial (CBN window, MABN renorm and R, BKN chain all active), in float64."""
    torch.manual_seed(0)
    block = nn.Sequential(conv_type(8, 16, 3, padding=1, bias=False), make_norm(16), nn.ReLU(),
                          conv_type(16, 16, 3, padding=1, bias=False), make_norm(16)).double()
    opt = torch.optim.SGD(block.parameters(), lr=0.1)
    for _ in range(4):
        x = torch.randn(2, 8, 6, 6, dtype=torch.float64) * 3 + 1
        opt.zero_grad()
        block(x).square().mean().backward()
        opt.step()
    with torch.no_grad():
        for m in block.modules():
            if m.affine if hasattr(m, 'affine') else False:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-1, 1)
    return block.eval()


@pytest.mark.parametrize('name', list(NORMS))
@pytest.mark.parametrize('conv_type', [nn.Conv2d, CenConv2d])
def test_converted_and_fused_block_matches_eval(name, conv_type):
    block = _trained_block(NORMS[name], conv_type)
    x = torch.randn(3, 8, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        converted = convert_norms_to_bn(block)
        kinds = {type(m) for m in converted.modules()}
        assert kinds <= {nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU}, kinds
        torch.testing.assert_close(converted(x), expected, rtol=1e-10, atol=1e-10)
        fused = fuse_conv_bn(converted)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused(x), expected, rtol=1e-9, atol=1e-9)


def test_fuse_conv_bn_on_unconverted_cbn_eps_outside_is_wrong():
    # why the converter exists: mmcv's fuse_conv_bn accepts any _BatchNorm subclass and folds
    # it with BN's formula (BGN's G-entry statistics do not even broadcast)
    block = _trained_block(NORMS['CBN-eps-outside'])
    x = torch.randn(3, 8, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        assert not torch.allclose(fuse_conv_bn(block)(x), expected, atol=1e-3)
        with pytest.raises(RuntimeError):
            fuse_conv_bn(_trained_block(NORMS['BGN']))(x)


def test_equivalent_batchnorm_state():
    bgn = BGN(8, num_groups=2)
    bgn.running_mean.copy_(torch.tensor([1., 2.]))
    bgn.running_var.copy_(torch.tensor([3., 4.]))
    bn = equivalent_batchnorm(bgn)
    assert torch.equal(bn.running_mean, torch.tensor([1.] * 4 + [2.] * 4))
    assert torch.equal(bn.running_var, torch.tensor([3.] * 4 + [4.] * 4))
    assert not bn.training and bn.eps == bgn.eps
    mabn = MABN(4)
    assert torch.equal(equivalent_batchnorm(mabn).running_mean, torch.zeros(4))


def test_norm_without_running_stats_is_refused():
    with pytest.raises(ValueError, match='track_running_stats=False'):
        equivalent_batchnorm(BGN(8, num_groups=2, track_running_stats=False))
    with pytest.raises(TypeError):
        equivalent_batchnorm(nn.BatchNorm2d(4))


@pytest.mark.parametrize('method', ['cbn', 'mabn', 'bgn', 'bkn'])
def test_convert_config_is_plain_mmdet(method):
    from mmnorm_plugin.engine.compile_norms import use_compile_norms_hook
    cfg = Config.fromfile(DEMO.format(method))
    use_compile_norms_hook(cfg)  # as in the config our tools/train.py dumps for a compiled run
    cfg = convert_config(cfg)
    text = cfg.pretty_text
    for word in ('mmnorm_plugin', 'CBN', 'MABN', 'BGN', 'BKN', 'CenConv2d', 'burnin',
                 'CompileNormsHook'):
        assert word not in text, word
    assert cfg.model.backbone.type == 'ResNet'
    assert cfg.model.neck.norm_cfg == dict(type='BN', requires_grad=True)


def test_convert_config_turns_synced_variants_into_bn():
    cfg = Config.fromfile(DEMO.format('cbn'))
    cfg.model.neck.norm_cfg = dict(type='SyncCBN', requires_grad=True, buffer_num=3)
    cfg.model.backbone.norm_cfg = dict(type='SyncBGN', requires_grad=True, num_groups=8)
    cfg = convert_config(cfg)
    assert 'Sync' not in cfg.pretty_text
    assert cfg.model.neck.norm_cfg == cfg.model.backbone.norm_cfg == dict(type='BN',
                                                                          requires_grad=True)


def test_convert_config_keeps_plugin_for_xbn():
    cfg = convert_config(Config.fromfile(
        osp.join(ROOT, 'configs', 'xbn', 'faster-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py')))
    assert cfg.model.backbone.type == 'XBNResNet'
    assert 'mmnorm_plugin' in cfg.custom_imports['imports']


# --- whole detector: train briefly, convert, load in a process that cannot import the plugin

_PLAIN_MMDET = r'''
import importlib.abc, json, sys
class _NoPlugin(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'mmnorm_plugin':
            raise ImportError('mmnorm_plugin must not be imported by a deployed model')
sys.meta_path.insert(0, _NoPlugin())
import torch
from mmcv.cnn import fuse_conv_bn
from mmdet.apis import inference_detector, init_detector
torch.set_num_threads(1)
jobs, images, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), {}
for name, (config, ckpt) in jobs.items():
    model = fuse_conv_bn(init_detector(config, ckpt, device='cpu'))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    res = inference_detector(model, images)
    out[name] = [[r.pred_instances.bboxes.tolist(), r.pred_instances.scores.tolist(),
                  r.pred_instances.labels.tolist()] for r in res]
assert not any(k.split('.')[0] == 'mmnorm_plugin' for k in sys.modules)
print('RESULT' + json.dumps(out))
'''


def _train_briefly(cfg, steps=3):
    """A few SGD steps on the tiny train set: statistics and weights move, windows fill."""
    from mmdet.apis import init_detector
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import OptimWrapper
    model = init_detector(cfg, None, device='cpu')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    model.dataset_meta = dataset.metainfo
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    model.train()
    for i in range(steps):
        model.train_step(pseudo_collate([dataset[2 * i], dataset[2 * i + 1]]), optim)
    return model.eval()


@pytest.mark.slow
def test_converted_detectors_match_in_plain_mmdet(tmp_path):
    from mmdet.apis import inference_detector
    from mmengine.runner import save_checkpoint
    from mmnorm_plugin.deploy import convert_detector
    from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco

    data = tmp_path / 'data' / 'tiny_coco'
    make_tiny_coco(str(data), num_train=8, num_val=3)
    images = sorted(str(p) for p in (data / 'val').iterdir())
    jobs, expected = {}, {}
    for method in ('cbn', 'mabn', 'bgn', 'bkn'):
        cfg = Config.fromfile(DEMO.format(method))
        cfg.train_dataloader.dataset.data_root = str(data) + '/'
        if method == 'cbn':  # the cross-iteration window from the first iteration on
            for part in (cfg.model.backbone, cfg.model.neck, cfg.model.roi_head.bbox_head):
                part.norm_cfg.burnin_iters = 0
        torch.manual_seed(0)
        model = _train_briefly(cfg)
        ckpt = str(tmp_path / f'{method}.pth')
        save_checkpoint(dict(state_dict=model.state_dict(),
                             meta=dict(dataset_meta=model.dataset_meta)), ckpt)
        with torch.no_grad():
            expected[method] = inference_detector(model, images)
        out_cfg, out_ckpt = str(tmp_path / f'{method}_deploy.py'), str(tmp_path / f'{method}.pt')
        result = convert_detector(cfg, ckpt, out_cfg, out_ckpt)
        assert not result['needs_plugin']
        jobs[method] = (out_cfg, out_ckpt)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH='')
    proc = subprocess.run([sys.executable, '-c', _PLAIN_MMDET, json.dumps(jobs),
                           json.dumps(images)], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.split('RESULT', 1)[1])
    for method, results in expected.items():
        for ours, (boxes, scores, labels) in zip(results, got[method]):
            inst = ours.pred_instances
            assert len(scores) == len(inst.scores) > 0, method
            # the same detections (score, label, box within 1e-4), in any order: the plain-mmdet
            # process runs on one thread, and float sums in another order can swap two
            # detections whose scores tie to 1e-4
            theirs = torch.cat([torch.tensor(scores)[:, None], torch.tensor(labels)[:, None] * 1e3,
                                torch.tensor(boxes)], 1).double()
            mine = torch.cat([inst.scores[:, None], inst.labels[:, None] * 1e3, inst.bboxes],
                             1).double()
            gap = (theirs[:, None] - mine[None]).abs().amax(-1)
            assert gap.amin(1).max() <= 1e-4 and gap.amin(0).max() <= 1e-4, (method, gap.min())
