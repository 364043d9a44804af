"""Official XBNBlock checkpoint conversion and the BN-checkpoint key report."""
import pytest
import torch
from mmdet.registry import MODELS
from torch import nn

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.model_converters.xbn import (checkpoint_key_report, convert_official_xbn,
                                          format_key_report, infer_backbone_cfg,
                                          unwrap_state_dict)


def _norm(channels, batch_free):
    return nn.GroupNorm(min(64, channels), channels) if batch_free else nn.BatchNorm2d(channels)


class _RefBottleneck(nn.Module):
    """Written independently in the torchvision layout the official ImageNet code uses."""

    def __init__(self, inplanes, planes, stride, groups, width, bfn_index):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = _norm(width, bfn_index == 1)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = _norm(width, bfn_index == 2)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = _norm(planes * 4, bfn_index == 3)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class _RefXBNResNet(nn.Module):

    def __init__(self, base=4, groups=1, base_width=4, bfn_index=2, blocks=(3, 4, 6, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = _norm(base, True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = base
        for i, n in enumerate(blocks):
            planes = base * 2**i
            width = planes if groups == 1 else planes * base_width // base * groups
            layer = []
            for j in range(n):
                layer.append(_RefBottleneck(inplanes, planes, 2 if (i and not j) else 1, groups,
                                            width, bfn_index))
                inplanes = planes * 4
            setattr(self, f'layer{i + 1}', nn.Sequential(*layer))
        self.fc = nn.Linear(inplanes, 10)

    def features(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f'layer{i}')(x)
            outs.append(x)
        return outs


def _randomize(model):
    """Non-trivial statistics and affines, so a wrong mapping changes the outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    model.eval()  # mmdet's ResNet.train() returns None, so no chaining
    return model


def _official_checkpoint(ref):
    # what the official trainer writes: {'model': DataParallel state dict, ...}
    return dict(model={f'module.{k}': v for k, v in ref.state_dict().items()}, epoch=99)


@pytest.mark.parametrize('groups,bfn_index,position', [
    (1, 2, 'P2'), (1, 1, 'P1'), (1, 3, 'P3'), (2, 2, 'P2')])
def test_converted_official_checkpoint_reproduces_official_features(groups, bfn_index, position):
    ref = _randomize(_RefXBNResNet(groups=groups, base_width=2, bfn_index=bfn_index))
    state_dict, info = convert_official_xbn(_official_checkpoint(ref))
    assert info['bfn_position'] == position and info['stem_bfn']
    assert info['dropped'] == ['fc.weight', 'fc.bias']
    cfg = infer_backbone_cfg(state_dict, info)
    expected_type = 'XBNResNeXt' if groups > 1 else 'XBNResNet'
    assert cfg['type'] == expected_type and cfg['depth'] == 50 and cfg['base_channels'] == 4
    model = MODELS.build(cfg)
    report = checkpoint_key_report(model, state_dict)
    assert report['missing'] == report['unexpected'] == report['shape_mismatch'] == []
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model(x), ref.features(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_bare_state_dict_and_expected_position():
    ref = _RefXBNResNet(bfn_index=2)
    bare = ref.state_dict()
    assert list(unwrap_state_dict(bare)) == list(bare)
    _, info = convert_official_xbn(bare, bfn_position='P2')
    assert ('layer1.0.bn2.weight', 'layer1.0.gn2.weight') in info['renamed']
    with pytest.raises(ValueError, match='not P3'):
        convert_official_xbn(bare, bfn_position='P3')


def test_bn_checkpoint_is_refused_by_converter():
    bn_resnet = MODELS.build(dict(type='ResNet', depth=50, base_channels=4))
    with pytest.raises(ValueError, match='no batch-free norm'):
        convert_official_xbn(bn_resnet.state_dict())


def test_bn_resnet_checkpoint_key_report():
    """A BN ResNet checkpoint (mmdet/torchvision names) fills every BN part of XBNResNet."""
    bn_resnet = _randomize(MODELS.build(dict(type='ResNet', depth=50, base_channels=4)))
    state_dict = bn_resnet.state_dict()
    state_dict['fc.weight'] = torch.zeros(10, 128)  # torchvision's classifier is ignored
    xbn = MODELS.build(dict(type='XBNResNet', depth=50, base_channels=4))
    report = checkpoint_key_report(xbn, state_dict)
    n_bfn = 1 + 16  # stem + one per block
    assert sorted(report['missing']) == sorted(
        k for k in xbn.state_dict() if k.startswith('gn1.') or '.gn2.' in k)
    assert len(report['missing']) == 2 * n_bfn  # weight, bias
    assert sorted(report['unexpected']) == sorted(
        k for k in state_dict if k.startswith('bn1.') or '.bn2.' in k)
    assert len(report['unexpected']) == 5 * n_bfn  # + running stats, num_batches_tracked
    assert report['shape_mismatch'] == []
    xbn.load_state_dict(state_dict, strict=False)
    for key in report['loaded']:
        torch.testing.assert_close(xbn.state_dict()[key], state_dict[key], rtol=0, atol=0)
    text = format_key_report(report)
    assert 'missing: 34' in text and 'unexpected: 85' in text


def test_cli_round_trip(tmp_path):
    import importlib.util
    import os.path as osp

    from mmengine.runner import load_checkpoint

    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        'xbn_cli', osp.join(root, 'tools', 'model_converters', 'xbn_official_to_mmdet.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    ref = _randomize(_RefXBNResNet(bfn_index=2))
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'xbn.pth'
    torch.save(_official_checkpoint(ref), src)
    _, backbone = cli.main([str(src), str(dst), '--bfn-position', 'P2'])
    # the file loads the way a config's init_cfg=dict(type='Pretrained') loads it
    model = MODELS.build(backbone)
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    torch.testing.assert_close(model.layer3[1].gn2.weight, ref.layer3[1].bn2.weight)
