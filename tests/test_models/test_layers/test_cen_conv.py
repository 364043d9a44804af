"""CenConv2d: the centralized conv, its Conv2d compatibility, mmcv/mmdet glue and folding."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_conv_layer
from torch import nn

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.models.layers import CenConv2d, centralize_weight, fold_cen_conv


@pytest.mark.parametrize('groups', [1, 2])
def test_forward_uses_zero_mean_filters(groups):
    conv = CenConv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=groups, bias=True)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    conv.double()
    w = conv.weight.detach()
    w_hat = w - w.reshape(6, -1).mean(1).view(6, 1, 1, 1)
    expected = F.conv2d(x, w_hat, conv.bias, 2, 1, 1, groups)
    torch.testing.assert_close(conv(x), expected)
    assert centralize_weight(w).sum(dim=(1, 2, 3)).abs().max() < 1e-12
    # a constant input gives the bias only (away from the zero padding): filters sum to 0
    y_const = conv(torch.ones(1, 4, 9, 9, dtype=torch.float64))[:, :, 1:-1, 1:-1]
    torch.testing.assert_close(y_const, conv.bias.detach().view(1, 6, 1, 1).expand_as(y_const))


def test_gradient_is_projected_to_zero_mean():
    conv = CenConv2d(3, 5, 3, bias=False).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w: F.conv2d(x, centralize_weight(w)),
                                    (conv.weight.detach().clone().requires_grad_(),))
    conv(x).pow(2).sum().backward()
    assert conv.weight.grad.sum(dim=(1, 2, 3)).abs().max() < 1e-10


def test_same_state_dict_as_conv2d():
    plain = nn.Conv2d(4, 8, 3, padding=1)
    conv = CenConv2d(4, 8, 3, padding=1)
    assert list(conv.state_dict()) == list(plain.state_dict())
    conv.load_state_dict(plain.state_dict())  # strict
    assert torch.equal(conv.weight, plain.weight)


def test_built_by_mmcv_with_its_kwargs():
    conv = build_conv_layer(dict(type='CenConv2d'), in_channels=4, out_channels=8,
                            kernel_size=3, stride=1, padding=1, dilation=1, groups=1,
                            bias=False)
    assert isinstance(conv, CenConv2d) and conv.bias is None
    module = ConvModule(4, 8, 3, padding=1, conv_cfg=dict(type='CenConv2d'),
                        norm_cfg=dict(type='MABN'))
    assert isinstance(module.conv, CenConv2d) and module.conv.bias is None  # bias='auto'
    assert module(torch.randn(2, 4, 5, 5)).shape == (2, 8, 5, 5)


def test_mmdet_fpn_and_resnet_use_it():
    from mmdet.models.backbones import ResNet
    from mmdet.models.necks import FPN
    net = ResNet(depth=50, base_channels=2, conv_cfg=dict(type='CenConv2d'),
                 norm_cfg=dict(type='MABN'), norm_eval=False, init_cfg=None)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, CenConv2d) for m in convs)  # stem, blocks, downsample
    neck = FPN([8, 16, 32, 64], 8, 5, conv_cfg=dict(type='CenConv2d'),
               norm_cfg=dict(type='MABN'))
    feats = net(torch.randn(2, 3, 64, 64))
    assert len(neck(feats)) == 5


def test_fold_to_plain_conv():
    torch.manual_seed(0)
    model = nn.Sequential(CenConv2d(3, 4, 3, padding=1, bias=True), nn.ReLU(),
                          nn.Sequential(CenConv2d(4, 4, 1, groups=2)))
    x = torch.randn(2, 3, 7, 7)
    y = model(x)
    folded = fold_cen_conv(copy.deepcopy(model))
    assert not any(isinstance(m, CenConv2d) for m in folded.modules())
    assert all(type(m) is nn.Conv2d for m in (folded[0], folded[2][0]))
    torch.testing.assert_close(folded(x), y)
    single = fold_cen_conv(CenConv2d(3, 2, 3))
    assert type(single) is nn.Conv2d
