"""Official megvii-model/MABN checkpoint layout -> mmdet ResNet + CenConv2d + MABN keys.

The official-layout dicts are built from our own model's state in reverse (maskrcnn-benchmark
names and buffer shapes of ``det/maskrcnn_benchmark/layers/MABN.py``), so a converted load must
be strict and reproduce the model exactly, MABN window included.
"""
import importlib.util
import os.path as osp
from collections import OrderedDict

import pytest
import torch
from mmdet.models.backbones import ResNet

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.model_converters.mabn import convert_official_mabn
from mmnorm_plugin.norms.mabn import MABN

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(depth=50, base_channels=4, style='caffe', conv_cfg=dict(type='CenConv2d'),
            norm_cfg=dict(type='MABN', buffer_size=4, warmup_iters=2, renorm_hold_iters=3),
            norm_eval=False, frozen_stages=-1, zero_init_residual=False)
MABN_TO_OFFICIAL = {'chi2_history': 'buffer_x2', 'psi_history': 'buffer_gz',
                    'num_batches_tracked': 'iters'}


def _trained_model(steps=6):
    """A caffe-style MABN ResNet past warm-up, SMA and renorm hold (non-trivial state)."""
    torch.manual_seed(0)
    model = ResNet(**TINY)
    model.train()
    for _ in range(steps):
        sum(o.square().mean() for o in model(torch.randn(2, 3, 32, 32))).backward()
    return model


def _to_official(model):
    """Our state dict under the official detection code's names, prefixes and shapes."""
    norms = {name for name, m in model.named_modules() if isinstance(m, MABN)}
    out = OrderedDict()
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition('.')
        if module in norms:
            if leaf == 'running_mean':
                continue  # the official layer has none
            if leaf == 'running_var':
                value = value.view(1, -1, 1, 1)
            if leaf == 'num_batches_tracked':
                value = value.view(1)
            leaf = MABN_TO_OFFICIAL.get(leaf, leaf)
        if module.split('.')[0] in ('conv1', 'bn1'):
            module = 'stem.' + module
        out[f'module.backbone.body.{module}.{leaf}'] = value.clone()
    # the rest of an official detector, which the converter drops
    out['module.backbone.fpn.fpn_inner1.weight'] = torch.randn(8, 16, 1, 1)
    out['module.rpn.head.conv.weight'] = torch.randn(8, 8, 3, 3)
    out['module.roi_heads.box.feature_extractor.fc6.weight'] = torch.randn(4, 8)
    return out


def test_official_detection_layout_loads_strictly_and_exactly():
    model = _trained_model()
    assert model.bn1.num_batches_tracked.item() == 6
    official = _to_official(model)
    assert 'module.backbone.body.stem.bn1.buffer_x2' in official
    assert 'module.backbone.body.layer1.0.downsample.1.iters' in official
    state, report = convert_official_mabn(dict(model=official))
    assert report['layout'] == 'maskrcnn-benchmark' and report['style'] == 'caffe'
    assert not report['restarted'] and len(report['dropped']) == 3

    fresh = ResNet(**TINY)
    fresh.load_state_dict(state, strict=True)
    ref = model.state_dict()
    assert list(state) == list(ref)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, ref[key]), key
        assert value.dtype == ref[key].dtype, key

    # same function and same state evolution, training (SMA window, renorm) and inference
    x = torch.randn(2, 3, 32, 32)
    for net in (model, fresh):
        net.train()
        sum(o.square().mean() for o in net(x)).backward()
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key], rtol=0, atol=0)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        for a, b in zip(model(x), fresh(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_restart_drops_counter_and_window():
    model = _trained_model()
    state, report = convert_official_mabn(_to_official(model), restart=True)
    assert report['restarted']
    assert not any(k.endswith(('chi2_history', 'psi_history')) for k in state)
    assert all(state[k].item() == 0 for k in state if k.endswith('num_batches_tracked'))
    # a different window (the 8xb1 configs' 32 iterations) loads with only the window missing
    fresh = ResNet(**{**TINY, 'norm_cfg': dict(type='MABN', buffer_size=8)})
    result = fresh.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith(('chi2_history', 'psi_history')) for k in result.missing_keys)
    assert torch.equal(fresh.layer2[0].bn2.running_var, model.layer2[0].bn2.running_var)


def test_imagenet_code_layout_is_pytorch_style_and_restarted():
    """cls/networks: torchvision names, running_var (C,), float iters, pair-window buffers."""
    model = _trained_model(steps=2)
    norms = {name for name, m in model.named_modules() if isinstance(m, MABN)}
    official = OrderedDict()
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition('.')
        if module in norms and leaf in ('running_mean', 'chi2_history', 'psi_history'):
            continue
        if module in norms and leaf == 'num_batches_tracked':
            official[f'module.{module}.iters'] = value.float().view(1)
            official[f'module.{module}.sta_matrix'] = torch.ones(4, 8) / 4
            official[f'module.{module}.pre_x2'] = torch.ones(4, value.numel())
            official[f'module.{module}.pre_gz'] = torch.zeros(4, value.numel())
            continue
        official[f'module.{key}'] = value.clone()
    official['module.fc.weight'] = torch.randn(10, 8)
    state, report = convert_official_mabn(official)
    assert report['layout'] == 'torchvision' and report['style'] == 'pytorch'
    assert report['restarted'] and report['dropped'] == ['fc.weight']
    fresh = ResNet(**TINY)
    result = fresh.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith(('chi2_history', 'psi_history')) for k in result.missing_keys)
    assert torch.equal(fresh.layer1[0].conv2.weight, model.layer1[0].conv2.weight)


def test_bn_checkpoint_is_refused():
    bn = ResNet(depth=50, base_channels=4)
    with pytest.raises(ValueError, match='resnet_to_mabn'):
        convert_official_mabn(bn.state_dict())
    with pytest.raises(ValueError, match='no norm layer'):
        convert_official_mabn({'conv1.weight': torch.zeros(4, 3, 7, 7)})


def test_cli_round_trip(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'mabn_official_to_mmdet',
        osp.join(ROOT, 'tools', 'model_converters', 'mabn_official_to_mmdet.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    model = _trained_model(steps=1)
    src, dst = tmp_path / 'R50-wc.pth', tmp_path / 'out' / 'converted.pth'
    torch.save(dict(model=_to_official(model)), src)
    cli.main([str(src), str(dst)])
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert saved['meta']['style'] == 'caffe'
    ResNet(**TINY).load_state_dict(saved['state_dict'], strict=True)
