"""Tests for BGN (Batch Group Normalization, arXiv 2012.02782)."""
import pytest
import torch
from mmcv.cnn import build_norm_layer
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmnorm_plugin.norms.bgn import BGN, pool_group_stats


def _reference(x, num_groups, weight, bias, eps):
    """Group statistics written out with plain reductions over (N, C/G, H, W)."""
    n, c, h, w = x.shape
    grouped = x.reshape(n, num_groups, c // num_groups, h, w)
    mean = grouped.mean(dim=(0, 2, 3, 4), keepdim=True)
    var = ((grouped - mean) ** 2).mean(dim=(0, 2, 3, 4), keepdim=True)
    y = ((grouped - mean) / (var + eps).sqrt()).reshape(n, c, h, w)
    return y * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1), mean.flatten(), var.flatten()


def _random_affine(layer, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.num_features, generator=g) + 0.5)
        layer.bias.copy_(torch.randn(layer.num_features, generator=g))
    return layer


def test_registered_in_root_registry_as_batchnorm():
    name, layer = build_norm_layer(dict(type='BGN', num_groups=4), 8)
    assert isinstance(layer, BGN) and isinstance(layer, _BatchNorm)
    assert name == 'bn'
    assert layer.eps == 1e-5  # injected by build_norm_layer and accepted
    assert layer.running_mean.shape == (4,) and layer.running_var.shape == (4,)
    assert layer.weight.shape == (8,) and layer.bias.shape == (8,)


@pytest.mark.parametrize('groups,channels', [(3, 8), (16, 8), (5, 256)])
def test_groups_not_dividing_channels_is_a_build_error(groups, channels):
    with pytest.raises(ValueError, match=f'num_groups={groups}.*num_features={channels}'):
        build_norm_layer(dict(type='BGN', num_groups=groups), channels)


@pytest.mark.parametrize('groups', [0, -2, 2.0])
def test_invalid_num_groups(groups):
    with pytest.raises(ValueError, match='num_groups'):
        BGN(8, num_groups=groups)


@pytest.mark.parametrize('momentum', [0.1, None])
def test_groups_equal_channels_is_batchnorm(momentum):
    """G = C: forward, backward and running statistics equal nn.BatchNorm2d."""
    c = 6
    bn = _random_affine(nn.BatchNorm2d(c, momentum=momentum).double())
    bgn = _random_affine(BGN(c, momentum=momentum, num_groups=c).double())
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x = torch.randn(2, c, 5, 4, generator=g, dtype=torch.float64) * 3 + step
        upstream = torch.randn(2, c, 5, 4, generator=g, dtype=torch.float64)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = bn(xa), bgn(xb)
        torch.testing.assert_close(yb, ya, rtol=0, atol=1e-12)
        ya.backward(upstream)
        yb.backward(upstream)
        torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(bgn.weight.grad, bn.weight.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(bgn.bias.grad, bn.bias.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(bgn.running_mean, bn.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(bgn.running_var, bn.running_var, rtol=0, atol=1e-12)
    assert int(bgn.num_batches_tracked) == int(bn.num_batches_tracked) == 3
    bn.eval()
    bgn.eval()
    torch.testing.assert_close(bgn(x), bn(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize('groups', [1, 2, 3])
def test_training_matches_group_statistics(groups):
    """Output, running statistics (BN's convention) and gradients against plain reductions."""
    c, eps, momentum = 6, 1e-5, 0.1
    layer = _random_affine(BGN(c, momentum=momentum, num_groups=groups).double())
    x = (torch.randn(3, c, 4, 5, dtype=torch.float64) * 2 + 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    upstream = torch.randn_like(x)

    y = layer(x)
    y_ref, mean, var = _reference(x_ref, groups, layer.weight, layer.bias, eps)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)

    m = x.numel() // groups
    torch.testing.assert_close(layer.running_mean, momentum * mean.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_var,
                               (1 - momentum) + momentum * var.detach() * m / (m - 1),
                               rtol=0, atol=1e-12)

    grads = torch.autograd.grad(y, (x, layer.weight, layer.bias), upstream)
    grads_ref = torch.autograd.grad(y_ref, (x_ref, layer.weight, layer.bias), upstream)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_float32_statistics_survive_a_large_mean():
    """Pooling per-sample group statistics must not compute var as E[x²] - E[x]² in float32."""
    layer = BGN(8, num_groups=2)
    x64 = torch.randn(2, 8, 6, 6, dtype=torch.float64) + 1000.0
    y = layer(x64.float())
    y_ref, _, var = _reference(x64, 2, layer.weight.double(), layer.bias.double(), 1e-5)
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=2e-3)
    m = x64.numel() // 2
    torch.testing.assert_close(layer.running_var.double(),
                               0.9 + 0.1 * var * m / (m - 1), rtol=1e-4, atol=0)


def test_gradcheck_training_mode():
    layer = _random_affine(BGN(4, num_groups=2, track_running_stats=False).double())
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, w, b: BGN.forward(layer, inp),
                                    (x, layer.weight, layer.bias))
    layer.eval()
    assert torch.autograd.gradcheck(lambda inp: layer(inp), (x,))


def test_eval_is_per_channel_affine_from_group_running_stats():
    c, groups, eps = 8, 2, 1e-5
    layer = _random_affine(BGN(c, num_groups=groups))
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.5, -1.0]))
        layer.running_var.copy_(torch.tensor([2.0, 0.25]))
    layer.eval()
    x = torch.randn(2, c, 3, 3)
    mean_c = torch.tensor([0.5] * 4 + [-1.0] * 4)
    var_c = torch.tensor([2.0] * 4 + [0.25] * 4)
    scale = layer.weight / (var_c + eps).sqrt()
    shift = layer.bias - mean_c * scale
    expected = x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    before = layer.state_dict()
    torch.testing.assert_close(layer(x), expected)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key  # eval never updates the statistics
    # the folded affine is a conv with per-output-channel scaled weights
    conv = nn.Conv2d(3, c, 3, padding=1)
    z = torch.randn(1, 3, 5, 5)
    fused = nn.Conv2d(3, c, 3, padding=1)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_(conv.bias * scale + shift)
    torch.testing.assert_close(fused(z), layer(conv(z)), rtol=1e-5, atol=1e-5)


def test_cumulative_average_with_momentum_none():
    layer = BGN(4, momentum=None, num_groups=2).double()
    means, variances = [], []
    for step in range(4):
        x = torch.randn(2, 4, 3, 3, dtype=torch.float64) + step
        _, mean, var = _reference(x, 2, torch.ones(4, dtype=torch.float64),
                                  torch.zeros(4, dtype=torch.float64), 1e-5)
        m = x.numel() // 2
        means.append(mean)
        variances.append(var * m / (m - 1))
        layer(x)
    # momentum=None: running stats are the plain average of all batches' statistics
    torch.testing.assert_close(layer.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(layer.running_var, torch.stack(variances).mean(0))
    assert int(layer.num_batches_tracked) == 4


@pytest.mark.parametrize('training', [True, False])
def test_empty_batch(training):
    layer = BGN(8, num_groups=4).train(training)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.zeros(0, 8, 7, 7, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 8, 7, 7)
    y.sum().backward()
    assert torch.equal(layer.weight.grad, torch.zeros(8))
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bad_input_is_a_clear_error():
    layer = BGN(8, num_groups=4)
    with pytest.raises(ValueError, match='4-D'):
        layer(torch.randn(2, 8, 5))
    with pytest.raises(ValueError, match='BGN\\(8\\).*6 channels'):
        layer(torch.randn(2, 6, 3, 3))


def test_without_affine_and_without_running_stats():
    layer = BGN(6, num_groups=3, affine=False, track_running_stats=False).double().eval()
    assert layer.running_mean is None and layer.weight is None
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    y_ref, _, _ = _reference(x, 3, torch.ones(6, dtype=torch.float64),
                             torch.zeros(6, dtype=torch.float64), layer.eps)
    torch.testing.assert_close(layer(x), y_ref)  # batch statistics even in eval mode


def test_pooled_statistics_are_those_of_the_union():
    """Pooling per-channel statistics gives exactly the statistics of the channel group."""
    x = torch.randn(3, 8, 4, 4, dtype=torch.float64) * torch.arange(1, 9).view(1, 8, 1, 1) \
        + torch.arange(8).view(1, 8, 1, 1)
    mean_c = x.mean(dim=(0, 2, 3))
    var_c = x.var(dim=(0, 2, 3), unbiased=False)
    mean_g, var_g = pool_group_stats(mean_c, var_c, 2)
    _, want_mean, want_var = _reference(x, 2, torch.ones(8, dtype=torch.float64),
                                        torch.zeros(8, dtype=torch.float64), 0.0)
    torch.testing.assert_close(mean_g, want_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(var_g, want_var, rtol=0, atol=1e-12)


@pytest.mark.parametrize('loader', ['torch', 'mmengine'])
def test_loading_a_batchnorm_checkpoint_pools_the_statistics(loader):
    c, groups = 8, 2
    bn = nn.Sequential(nn.Conv2d(3, c, 1), nn.BatchNorm2d(c))
    with torch.no_grad():
        bn[1].running_mean.copy_(torch.randn(c))
        bn[1].running_var.copy_(torch.rand(c) + 0.1)
        bn[1].weight.copy_(torch.rand(c))
    bn[1].num_batches_tracked.fill_(7)
    state = bn.state_dict()
    bgn = nn.Sequential(nn.Conv2d(3, c, 1), BGN(c, num_groups=groups))
    if loader == 'torch':
        bgn.load_state_dict(state, strict=True)
    else:
        mmengine_load_state_dict(bgn, state, strict=True)

    mean_c, var_c = state['1.running_mean'], state['1.running_var']
    assert mean_c.shape == (c,), 'the caller\'s state dict must not be modified'
    m, v = mean_c.double().view(groups, -1), var_c.double().view(groups, -1)
    want_mean = m.mean(1)
    want_var = (v + m ** 2).mean(1) - want_mean ** 2
    torch.testing.assert_close(bgn[1].running_mean, want_mean.float())
    torch.testing.assert_close(bgn[1].running_var, want_var.float())
    assert torch.equal(bgn[1].weight, bn[1].weight)
    assert int(bgn[1].num_batches_tracked) == 7


def test_loading_finer_bgn_statistics_and_rejecting_mismatches():
    fine = BGN(8, num_groups=4)
    with torch.no_grad():
        fine.running_mean.copy_(torch.tensor([1., 3., -2., 0.]))
        fine.running_var.copy_(torch.tensor([1., 1., 4., 2.]))
    coarse = BGN(8, num_groups=2)
    coarse.load_state_dict(fine.state_dict())
    torch.testing.assert_close(coarse.running_mean, torch.tensor([2., -1.]))
    torch.testing.assert_close(coarse.running_var, torch.tensor([2., 4.]))
    # coarser statistics cannot be split: torch's size-mismatch error, not a silent guess
    with pytest.raises(RuntimeError, match='size mismatch'):
        BGN(8, num_groups=4).load_state_dict(BGN(8, num_groups=2).state_dict())


def test_state_round_trip_resumes_identically():
    torch.manual_seed(0)
    a = _random_affine(BGN(4, num_groups=2))
    data = [torch.randn(2, 4, 3, 3) for _ in range(3)]
    a(data[0])
    b = BGN(4, num_groups=2)
    b.load_state_dict(a.state_dict())
    for x in data[1:]:
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    assert b.double().running_mean.dtype == torch.float64  # buffers move with .to()


def test_norm_eval_freezes_statistics_in_mmdet_resnet():
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=18, num_stages=1, strides=(1, ), dilations=(1, ), out_indices=(0, ),
                 frozen_stages=-1,
                 norm_cfg=dict(type='BGN', num_groups=4), norm_eval=True)
    net.train()
    layers = [m for m in net.modules() if isinstance(m, BGN)]
    assert layers and all(not m.training for m in layers)
    before = [m.running_mean.clone() for m in layers]
    net(torch.randn(1, 3, 32, 32))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(layers, before))


def test_resnet_bn_checkpoint_loads_into_bgn_resnet():
    """An ImageNet-style BN ResNet state dict loads strictly into the BGN ResNet."""
    from mmdet.models.backbones import ResNet
    kwargs = dict(depth=18, num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(1, ),
                  frozen_stages=-1)
    bn_net = ResNet(norm_cfg=dict(type='BN'), **kwargs)
    for m in bn_net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    bgn_net = ResNet(norm_cfg=dict(type='BGN', num_groups=32), **kwargs)
    mmengine_load_state_dict(bgn_net, bn_net.state_dict(), strict=True)
    want, _ = pool_group_stats(bn_net.layer2[0].bn1.running_mean,
                               bn_net.layer2[0].bn1.running_var, 32)
    torch.testing.assert_close(bgn_net.layer2[0].bn1.running_mean, want)
