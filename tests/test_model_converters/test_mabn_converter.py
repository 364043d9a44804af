"""BN ResNet -> CenConv2d + MABN ResNet checkpoint conversion (package function and CLI)."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmdet.models.backbones import ResNet

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.model_converters.mabn import convert_resnet_to_mabn
from mmnorm_plugin.models.layers import CenConv2d
from mmnorm_plugin.norms.mabn import MABN

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = dict(depth=18, base_channels=4, out_indices=(0, 1, 2, 3))


def _bn_resnet():
    """A tiny BN ResNet with non-trivial running statistics, in eval mode."""
    torch.manual_seed(0)
    net = ResNet(**TINY, norm_eval=False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    net.train()
    for _ in range(3):
        net(torch.randn(2, 3, 32, 32) + 0.5)
    net.eval()  # mmdet's ResNet.train() returns None, so no chaining
    return net


def _mabn_resnet(conv_cfg=dict(type='CenConv2d')):
    return ResNet(**TINY, conv_cfg=conv_cfg, norm_cfg=dict(type='MABN'), norm_eval=False)


def _load(model, state_dict):
    result = model.load_state_dict(state_dict, strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith(('chi2_history', 'psi_history')) for k in result.missing_keys)
    return model


def test_fold_without_centralization_reproduces_bn_inference():
    bn_net = _bn_resnet()
    assert any(m.running_mean.abs().max() > 0.01 for m in bn_net.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    sd = convert_resnet_to_mabn(bn_net.state_dict(), centralize=False, mean='fold')
    mabn_net = _load(_mabn_resnet(conv_cfg=None), sd)
    mabn_net.eval()
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(bn_net(x), mabn_net(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_default_conversion_centralizes_and_resets_state():
    bn_net = _bn_resnet()
    sd = convert_resnet_to_mabn({'state_dict': bn_net.state_dict()})
    assert set(sd) == set(bn_net.state_dict())  # same keys: bn* and Conv2d names
    for key, value in sd.items():
        if value.dim() == 4:
            assert value.mean(dim=(1, 2, 3)).abs().max() < 1e-6, key
        if key.endswith('running_mean'):
            assert not value.any()
        if key.endswith('num_batches_tracked'):
            assert value.item() == 0
        if key.endswith(('running_var', 'bn1.bias')):  # drop: variance -> R, beta kept
            assert torch.equal(value, bn_net.state_dict()[key])
    mabn_net = _load(_mabn_resnet(), sd)
    # CenConv2d centralizes in forward: converted and raw weights compute the same conv
    raw = _load(_mabn_resnet(), convert_resnet_to_mabn(bn_net.state_dict(), centralize=False))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(mabn_net.conv1(x), raw.conv1(x))
    mabn_net.train()
    outs = mabn_net(x)
    assert all(torch.isfinite(o).all() for o in outs)
    assert isinstance(mabn_net.conv1, CenConv2d) and isinstance(mabn_net.bn1, MABN)


def test_detector_checkpoint_prefix_and_classifier_dropped():
    bn_sd = _bn_resnet().state_dict()
    ckpt = {'meta': {}, 'state_dict': {**{f'backbone.{k}': v for k, v in bn_sd.items()},
                                       'neck.lateral_convs.0.conv.weight': torch.ones(1)}}
    assert set(convert_resnet_to_mabn(ckpt)) == set(bn_sd)
    tv_like = {**bn_sd, 'fc.weight': torch.ones(10, 32), 'fc.bias': torch.ones(10)}
    assert set(convert_resnet_to_mabn(tv_like)) == set(bn_sd)
    with pytest.raises(ValueError, match='BatchNorm'):
        convert_resnet_to_mabn({'conv.weight': torch.ones(2, 2, 1, 1)})
    with pytest.raises(ValueError, match='drop'):
        convert_resnet_to_mabn(bn_sd, mean='center')


def test_cli_round_trip(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'resnet_to_mabn', osp.join(ROOT, 'tools', 'model_converters', 'resnet_to_mabn.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    src, dst = tmp_path / 'bn.pth', tmp_path / 'out' / 'mabn.pth'
    bn_sd = _bn_resnet().state_dict()
    torch.save({'state_dict': bn_sd}, src)
    cli.main([str(src), str(dst)])
    saved = torch.load(dst, weights_only=True)
    expected = convert_resnet_to_mabn(bn_sd)
    assert saved['meta']['centralize'] and saved['meta']['mean'] == 'drop'
    assert all(torch.equal(saved['state_dict'][k], v) for k, v in expected.items())
    # what the fine-tune configs do: mmengine's Pretrained loader into the MABN backbone
    net = ResNet(**TINY, conv_cfg=dict(type='CenConv2d'), norm_cfg=dict(type='MABN'),
                 init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    net.init_weights()
    torch.testing.assert_close(net.conv1.weight, expected['conv1.weight'])
