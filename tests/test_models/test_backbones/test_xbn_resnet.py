"""XBNResNet / XBNResNeXt: structure, mmdet compatibility, freezing, norm_eval, zero-init."""
import pytest
import torch
from mmdet.models.backbones import ResNet, ResNeXt
from mmdet.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmnorm_plugin  # noqa: F401  (registers the backbones)
from mmnorm_plugin.models.backbones.xbn_resnet import (XBNResNet, XBNResNeXt,
                                                        build_bfn_layer)

TINY = dict(base_channels=4)
X = torch.randn(2, 3, 32, 32)
X64 = torch.randn(2, 3, 64, 64)  # InstanceNorm needs > 1 pixel in layer4 when training


def _build(**cfg):
    return MODELS.build(cfg)


def _blocks(model):
    return [blk for name in model.res_layers for blk in getattr(model, name)]


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def test_registered_in_mmdet_and_subclass_mmdet():
    assert MODELS.get('XBNResNet') is XBNResNet and issubclass(XBNResNet, ResNet)
    assert MODELS.get('XBNResNeXt') is XBNResNeXt and issubclass(XBNResNeXt, ResNeXt)


@pytest.mark.parametrize('depth', [18, 34, 50, 101, 152])
def test_resnet_depths_match_mmdet(depth):
    cfg = dict(depth=depth, out_indices=(0, 1, 2, 3), **TINY)
    ours, ref = _build(type='XBNResNet', **cfg), _build(type='ResNet', **cfg)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert [o.shape for o in ours(X)] == [o.shape for o in ref(X)]
    n_blocks = sum(ref.stage_blocks)
    # one BFN per block + the stem, every other norm still a BN
    assert _count(ours, nn.GroupNorm) == n_blocks + 1
    assert _count(ours, _BatchNorm) == _count(ref, _BatchNorm) - n_blocks - 1
    # GN and BN have the same affine parameters: nothing stale left behind, nothing added
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize('groups,base_width,depth', [(32, 4, 50), (64, 4, 50), (32, 4, 101)])
def test_resnext_matches_mmdet(groups, base_width, depth):
    cfg = dict(depth=depth, groups=groups, base_width=base_width, **TINY)
    ours, ref = _build(type='XBNResNeXt', **cfg), _build(type='ResNeXt', **cfg)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert [o.shape for o in ours(X)] == [o.shape for o in ref(X)]
    for blk in _blocks(ours):
        assert blk.conv2.groups == groups
        # BFN after the grouped 3x3 conv, on ResNeXt's `width` channels, 64 groups capped at C
        assert isinstance(blk.norm2, nn.GroupNorm)
        assert blk.norm2.num_channels == blk.conv2.out_channels
        assert blk.norm2.num_groups == min(64, blk.conv2.out_channels)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize('position,index', [('P1', 1), ('P2', 2), ('P3', 3)])
def test_bottleneck_positions_and_no_stale_child(position, index):
    model = _build(type='XBNResNet', depth=50, bfn_position=position, **TINY)
    keys = model.state_dict().keys()
    for blk in _blocks(model):
        for i in (1, 2, 3):
            norm = getattr(blk, f'norm{i}')
            assert isinstance(norm, nn.GroupNorm) == (i == index)
            channels = norm.num_channels if i == index else norm.num_features
            assert channels == getattr(blk, f'conv{i}').out_channels
        children = list(blk._modules)
        assert f'bn{index}' not in children
        # the BFN takes the replaced norm's place (forward order kept in the state dict)
        assert children.index(f'gn{index}') == children.index(f'conv{index}') + 1
        assert blk.bfn is blk._modules[f'gn{index}']
    assert not any(f'.bn{index}.' in k for k in keys if k.startswith('layer'))
    assert 'gn1.weight' in keys and 'bn1.weight' not in keys


@pytest.mark.parametrize('position,index', [('P1', 1), ('P2', 1), ('P3', 2)])
def test_basic_block_positions(position, index):
    model = _build(type='XBNResNet', depth=18, bfn_position=position, **TINY)
    for blk in _blocks(model):
        assert isinstance(blk.norm1, nn.GroupNorm) == (index == 1)
        assert isinstance(blk.norm2, nn.GroupNorm) == (index == 2)


def test_stem_bfn_switch_and_deep_stem():
    plain = _build(type='XBNResNet', depth=50, stem_bfn=False, **TINY)
    assert isinstance(plain.norm1, _BatchNorm) and plain.norm1_name == 'bn1'
    deep = _build(type='XBNResNet', depth=50, deep_stem=True, **TINY)
    norms = [m for m in deep.stem if not isinstance(m, (nn.Conv2d, nn.ReLU))]
    assert [type(m) for m in norms] == [nn.BatchNorm2d, nn.BatchNorm2d, nn.GroupNorm]
    ref = _build(type='ResNet', depth=50, deep_stem=True, avg_down=True, **TINY)
    ours = _build(type='XBNResNet', depth=50, deep_stem=True, avg_down=True, **TINY)
    assert [o.shape for o in ours(X)] == [o.shape for o in ref(X)]


def test_norm_eval_freezes_bn_but_bfn_stays_per_sample():
    model = _build(type='XBNResNet', depth=50, norm_eval=True, frozen_stages=-1, **TINY)
    model.init_weights()
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    bfn_out = {}

    def keep_output(module, inputs, output):
        bfn_out['y'] = output.clone()  # the block's ReLU runs in place on it next

    model.layer2[1].gn2.register_forward_hook(keep_output)
    x = torch.randn(3, 3, 64, 64)  # live BN below needs > 1 value per channel in layer4
    out = model(x)
    for m, b in zip(bns, before):
        torch.testing.assert_close(m.running_mean, b, rtol=0, atol=0)
    # the BFN normalized each sample with its own statistics (weight 1, bias 0 at init)
    y, gn = bfn_out['y'], model.layer2[1].gn2
    y = y.reshape(y.shape[0], gn.num_groups, -1)
    torch.testing.assert_close(y.mean(-1), torch.zeros(y.shape[:2]), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(y.shape[:2]),
                               atol=1e-2, rtol=0)
    # so the whole backbone is batch-independent: sample 0 alone gives the same features
    alone = model(x[:1])
    for a, b in zip(alone, out):
        torch.testing.assert_close(a, b[:1], atol=1e-5, rtol=1e-4)
    # ... which is not true with live BN (the property above is not vacuous)
    model.norm_eval = False
    model.train()
    assert not torch.allclose(model(x[:1])[-1], model(x)[-1][:1], atol=1e-3)


def test_frozen_stages_freeze_bfn_too():
    model = _build(type='XBNResNet', depth=50, frozen_stages=1, **TINY)
    model.train()
    assert not model.gn1.training and not model.gn1.weight.requires_grad
    for blk in model.layer1:
        assert not blk.gn2.weight.requires_grad and not blk.gn2.training
    for blk in model.layer2:
        assert blk.gn2.weight.requires_grad and blk.gn2.bias.requires_grad
    sum(o.sum() for o in model(X)).backward()
    assert model.gn1.weight.grad is None and model.layer1[0].gn2.weight.grad is None
    assert model.layer2[0].gn2.weight.grad is not None


@pytest.mark.parametrize('cfg,last', [
    (dict(type='XBNResNet', depth=50), 'norm3'),
    (dict(type='XBNResNet', depth=50, bfn_position='P3'), 'norm3'),
    (dict(type='XBNResNet', depth=18), 'norm2'),
    (dict(type='XBNResNet', depth=34, bfn_position='P3'), 'norm2'),
    (dict(type='XBNResNeXt', depth=50, groups=2, base_width=2), 'norm3'),
])
def test_zero_init_residual_zeroes_last_norm(cfg, last):
    model = _build(**cfg, **TINY)
    model.init_weights()
    for blk in _blocks(model):
        assert torch.count_nonzero(getattr(blk, last).weight) == 0
        others = [n for n in ('norm1', 'norm2', 'norm3') if hasattr(blk, n) and n != last]
        assert all(torch.all(getattr(blk, n).weight == 1) for n in others)
    model = _build(**cfg, zero_init_residual=False, **TINY)
    model.init_weights()
    assert all(torch.all(getattr(b, last).weight == 1) for b in _blocks(model))


def test_bfn_cfg_variants():
    ln = _build(type='XBNResNet', depth=50, bfn_cfg=dict(type='LN'), **TINY)
    assert isinstance(ln.layer1[0].norm2, nn.GroupNorm) and ln.layer1[0].norm2.num_groups == 1
    inorm = _build(type='XBNResNet', depth=50, bfn_cfg=dict(type='IN', affine=True), **TINY)
    assert isinstance(inorm.layer3[0].norm2, nn.InstanceNorm2d)
    gn = _build(type='XBNResNet', depth=50, bfn_cfg=dict(type='GN', num_groups=2), **TINY)
    assert gn.layer1[0].norm2.num_groups == 2 and gn.gn1.num_groups == 2
    for m in (ln, inorm, gn):
        m.train()
        assert [o.shape[1] for o in m(X64)] == [16, 32, 64, 128]


def test_num_groups_cap_and_clear_errors():
    _, layer = build_bfn_layer(dict(type='GN', num_groups=64), 16)
    assert layer.num_groups == 16
    _, layer = build_bfn_layer(dict(type='GN', num_groups=64), 256)
    assert layer.num_groups == 64
    with pytest.raises(ValueError, match='does not divide'):
        _build(type='XBNResNet', depth=50, bfn_cfg=dict(type='GN', num_groups=3), **TINY)
    with pytest.raises(ValueError, match='bfn_position'):
        _build(type='XBNResNet', depth=50, bfn_position='P4', **TINY)
    with pytest.raises(KeyError, match=r"Unknown norm type 'NoSuchNorm' at 'bfn_cfg'"):
        _build(type='XBNResNet', depth=50, bfn_cfg=dict(type='NoSuchNorm'), **TINY)
    with pytest.raises(TypeError, match='bfn_cfg'):
        _build(type='XBNResNet', depth=50, bfn_cfg='GN', **TINY)


def test_batch_statistics_bfn_warns(monkeypatch):
    from mmnorm_plugin.norms import reporting
    monkeypatch.setattr(reporting, '_warned', set())
    with pytest.warns(UserWarning, match='not batch-free'):
        build_bfn_layer(dict(type='BN'), 8)


def test_with_cp_and_plugins_still_work():
    model = _build(type='XBNResNet', depth=50, with_cp=True, **TINY)
    model.train()
    x = X.clone().requires_grad_()
    sum(o.sum() for o in model(x)).backward()
    assert model.layer4[0].gn2.weight.grad is not None
    plugins = [dict(cfg=dict(type='ContextBlock', ratio=1. / 4), stages=(False, True, True, True),
                    position='after_conv3')]
    for t, extra in (('XBNResNet', {}), ('XBNResNeXt', dict(groups=2, base_width=2))):
        model = _build(type=t, depth=50, plugins=plugins, **extra, **TINY)
        assert isinstance(model.layer2[0].norm2, nn.GroupNorm)
        assert [o.shape[1] for o in model(X)] == [16, 32, 64, 128]
