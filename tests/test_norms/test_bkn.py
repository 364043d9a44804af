"""Batch Kalman Normalization: equivalences, the closed-form prior, the chain, state."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmnorm_plugin.norms.bkn import BKN, FUSED, GATED, NO_PRIOR
from mmnorm_plugin.norms.bkn_prior import (GaussianState, predict_conv_moments,
                                           rectified_gaussian_moments)


def chain(norm, c_in=3, c=6, **kw):
    """conv -> norm -> ReLU -> conv -> norm -> ReLU -> conv(stride 2) -> norm."""
    return nn.Sequential(
        nn.Conv2d(c_in, c, 3, padding=1, bias=False), norm(c, **kw), nn.ReLU(inplace=True),
        nn.Conv2d(c, c, 3, padding=1, bias=False), norm(c, **kw), nn.ReLU(inplace=True),
        nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False), norm(c, **kw))


def test_registration_and_bn_compat():
    name, layer = build_norm_layer(dict(type='BKN', prior_weight=0.5), 8)
    assert name == 'bn' and isinstance(layer, _BatchNorm)
    assert layer.prior_weight == 0.5 and layer.eps == 1e-5
    # BN checkpoints load strictly (same names, the diagnostic buffer is not persisted)
    layer.load_state_dict(nn.BatchNorm2d(8).state_dict(), strict=True)


@pytest.mark.parametrize('kwargs', [dict(prior_weight=1.5), dict(gate_ratio=0),
                                    dict(prior_mode='mc'), dict(prior_input='raw')])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        BKN(4, **kwargs)


def test_bad_input():
    layer = BKN(4)
    with pytest.raises(ValueError, match='4-D'):
        layer(torch.randn(2, 4))
    with pytest.raises(ValueError, match='channels'):
        layer(torch.randn(2, 3, 4, 4))


def test_p0_equals_bn_forward_backward_running_stats():
    torch.manual_seed(1)
    bn = chain(nn.BatchNorm2d)
    bkn = chain(BKN, prior_weight=0.0)
    bkn.load_state_dict(bn.state_dict())
    for model in (bn, bkn):  # non-trivial affine parameters
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
    bkn.load_state_dict(bn.state_dict())
    for _ in range(2):
        x = torch.randn(2, 3, 8, 8)
        y_bn, y_bkn = bn(x), bkn(x)
        torch.testing.assert_close(y_bkn, y_bn, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(y_bn)
        y_bn.backward(g)
        y_bkn.backward(g)
    for (name, p_bn), p_bkn in zip(bn.named_parameters(), bkn.parameters()):
        torch.testing.assert_close(p_bkn.grad, p_bn.grad, atol=1e-5, rtol=1e-4, msg=name)
    for (name, b_bn), b_bkn in zip(bn.state_dict().items(), bkn.state_dict().values()):
        torch.testing.assert_close(b_bkn, b_bn, atol=1e-6, rtol=1e-5, msg=name)
    bn.eval(), bkn.eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(bkn(x), bn(x), atol=1e-5, rtol=1e-5)


def test_rectified_gaussian_moments_match_sampling():
    m = torch.tensor([-1.0, 0.0, 0.7, 3.0], dtype=torch.float64)
    v = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=torch.float64)
    z = F.relu(m + v.sqrt() * torch.randn(400000, 4, dtype=torch.float64))
    e, var = rectified_gaussian_moments(m, v)
    torch.testing.assert_close(e, z.mean(0), atol=5e-3, rtol=0)
    torch.testing.assert_close(var, z.var(0), atol=1e-2, rtol=0)
    # degenerate variance: relu(m) exactly
    e0, v0 = rectified_gaussian_moments(torch.tensor([-1.0, 2.0]), torch.zeros(2))
    torch.testing.assert_close(e0, torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(v0, torch.zeros(2))


@pytest.mark.parametrize('geom', [
    dict(k=3, stride=1, padding=1, dilation=1, groups=1, bias=False),
    dict(k=3, stride=2, padding=1, dilation=1, groups=2, bias=True),
    dict(k=3, stride=1, padding=2, dilation=2, groups=1, bias=False),
    dict(k=1, stride=2, padding=0, dilation=1, groups=1, bias=True),
])
@pytest.mark.parametrize('rectified', [True, False])
def test_closed_form_prior_equals_propagated_statistics(geom, rectified):
    """Sample many inputs with independent elements from the state, ReLU, conv, measure."""
    g = torch.Generator().manual_seed(0)
    c_in, c_out, size = 4, 6, (5, 6)
    state = GaussianState(torch.randn(c_in, generator=g, dtype=torch.float64),
                          torch.rand(c_in, generator=g, dtype=torch.float64) + 0.2, rectified)
    weight = torch.randn(c_out, c_in // geom['groups'], geom['k'], geom['k'], generator=g,
                         dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64) if geom['bias'] else None
    args = ((geom['stride'],) * 2, (geom['padding'],) * 2, (geom['dilation'],) * 2,
            geom['groups'])
    mean, var = predict_conv_moments(state, weight, bias, size, *args)
    a = state.mean.view(1, -1, 1, 1) + state.var.sqrt().view(1, -1, 1, 1) * torch.randn(
        20000, c_in, *size, generator=g, dtype=torch.float64)
    a = F.relu(a) if rectified else a
    out = F.conv2d(a, weight, bias, *args)
    emp_var, emp_mean = torch.var_mean(out, dim=(0, 2, 3), unbiased=False)
    scale = emp_var.sqrt()
    torch.testing.assert_close(mean / scale, emp_mean / scale, atol=1e-2, rtol=0)
    torch.testing.assert_close(var, emp_var, atol=0, rtol=1e-2)


def test_official_sample_prior_is_unbiased_estimate_of_closed_form():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6)
    stats = {}
    for mode in ('closed_form', 'sample'):
        torch.manual_seed(0)
        model = chain(BKN, prior_mode=mode)
        torch.manual_seed(1)
        means, vars_ = [], []
        for _ in range(1 if mode == 'closed_form' else 300):
            y = model[:4](x)  # conv, bkn, relu, conv: the 2nd layer's input
            prior = model[4].predict(y)
            means.append(prior[0].detach())
            vars_.append(prior[1].detach())
        stats[mode] = torch.stack(means).mean(0), torch.stack(vars_).mean(0)
    m_cf, v_cf = stats['closed_form']
    m_s, v_s = stats['sample']
    torch.testing.assert_close(m_s / v_cf.sqrt(), m_cf / v_cf.sqrt(), atol=0.05, rtol=0)
    # one 6x6 map per draw: the sample variance is biased low by about 1/(H*W)
    torch.testing.assert_close(v_s, v_cf, atol=0, rtol=0.1)


def test_chain_fusion_matches_formula():
    """conv-BKN-ReLU-conv-BKN: the 2nd layer fuses its batch stats with the prior predicted from
    the 1st layer's fused stats (momentum=1 exposes the fused stats in the running buffers)."""
    torch.manual_seed(0)
    p = 0.7
    model = chain(BKN, prior_weight=p, momentum=1.0, gate_ratio=None,
                  prior_input='estimated')
    x = torch.randn(2, 3, 8, 8)
    captured = {}
    model[3].register_forward_hook(lambda m, i, o: captured.update(z=o))
    model(x)
    first, second = model[1], model[4]
    assert int(first.prior_status) == NO_PRIOR and int(second.prior_status) == FUSED
    n = 2 * 8 * 8
    # 1st layer is plain BN: running_var is the unbiased batch variance
    h = model[0](x)
    torch.testing.assert_close(first.running_mean, h.mean((0, 2, 3)))
    torch.testing.assert_close(first.running_var, h.var((0, 2, 3), unbiased=True))
    var1 = h.var((0, 2, 3), unbiased=False)
    prior_mean, prior_var = predict_conv_moments(
        GaussianState(h.mean((0, 2, 3)), var1, True), model[3].weight.detach(), None, (8, 8),
        (1, 1), (1, 1), (1, 1), 1)
    z = captured['z'].detach()
    mu, var = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)
    fused_mean = p * prior_mean + (1 - p) * mu
    fused_var = p * prior_var + (1 - p) * var + p * (1 - p) * (mu - prior_mean) ** 2
    torch.testing.assert_close(second.running_mean, fused_mean, atol=1e-5, rtol=1e-5)
    fused_var_unb = fused_var + (1 - p) * var / (n - 1)
    torch.testing.assert_close(second.running_var, fused_var_unb, atol=1e-5, rtol=1e-5)
    # and the output is normalized with the fused statistics
    expect = (z - fused_mean.view(1, -1, 1, 1)) / (fused_var.view(1, -1, 1, 1) + 1e-5).sqrt()
    torch.testing.assert_close(model[4](captured['z']), expect, atol=1e-5, rtol=1e-5)


def test_gate_skips_fusion():
    torch.manual_seed(0)
    # the official prior (pre-normalization statistics) is the one a wild layer can blow up
    model = chain(BKN, prior_weight=0.9, gate_ratio=100.0, prior_input='estimated')
    x = torch.randn(2, 3, 8, 8)
    model(x)
    assert int(model[4].prior_status) == FUSED
    # a huge first-layer variance makes the 2nd layer's prior variance ~1e6x its batch variance
    with torch.no_grad():
        model[0].weight.mul_(1e3)
        model[3].weight.mul_(1e-3)
    model(x)
    assert int(model[4].prior_status) == GATED
    z = model[3](F.relu(model[1](model[0](x))))
    torch.testing.assert_close(model[4](z), F.batch_norm(z, None, None, model[4].weight,
                                                         model[4].bias, True, 0.0, 1e-5),
                               atol=1e-5, rtol=1e-5)


def test_chain_breaks_on_unknown_ops_and_new_forward():
    torch.manual_seed(0)
    conv1, conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, bias=False)
    n1, n2 = BKN(4), BKN(4)
    x = torch.randn(2, 3, 8, 8)
    a = F.relu(n1(conv1(x)))
    n2(conv2(a))
    assert int(n2.prior_status) == FUSED
    n2(conv2(F.max_pool2d(a, 2)))  # unmodelled op: new chain
    assert int(n2.prior_status) == NO_PRIOR
    n2(conv2(torch.randn(2, 4, 8, 8)))  # fresh tensor: nothing from the earlier forward leaks
    assert int(n2.prior_status) == NO_PRIOR
    n2(conv2(F.interpolate(a, scale_factor=2)))  # nearest x2 keeps moments: chain continues
    assert int(n2.prior_status) == FUSED
    with torch.no_grad():
        n2(conv2(a))
    assert int(n2.prior_status) == NO_PRIOR


def test_chain_inside_mmdet_resnet():
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    model = ResNet(depth=50, stem_channels=8, base_channels=4, norm_eval=False,
                   norm_cfg=dict(type='BKN', requires_grad=True))
    model.train()  # mmdet's ResNet.train() returns None
    # 64x64: stage 4 is 2x2, more than one value per channel (1x1 raises, as BN does)
    model(torch.randn(1, 3, 64, 64))
    status = {name: int(m.prior_status) for name, m in model.named_modules()
              if isinstance(m, BKN)}
    assert status.pop('bn1') == NO_PRIOR  # stem: image input
    # after the stem max-pool a new chain starts (plain BN) ...
    assert status.pop('layer1.0.bn1') == NO_PRIOR
    assert status.pop('layer1.0.downsample.1') == NO_PRIOR
    # ... and every later layer, across residual merges and downsamples, has a predecessor
    assert set(status.values()) <= {FUSED, GATED}
    assert sum(v == FUSED for v in status.values()) > 0.8 * len(status)


def test_residual_merge_state_is_sum():
    """relu(bn3(conv3(..)) + identity) -> conv: the prior uses the summed Gaussian state."""
    torch.manual_seed(0)
    p = 0.5
    conv_a, conv_b = nn.Conv2d(3, 4, 1, bias=False), nn.Conv2d(3, 4, 1, bias=False)
    conv_c = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    kw = dict(momentum=1.0, prior_input='estimated')  # the official prior: summed input stats
    na, nb = BKN(4, **kw), BKN(4, **kw)
    nc = BKN(4, prior_weight=p, gate_ratio=None, **kw)
    x = torch.randn(2, 3, 6, 6)
    ha, hb = conv_a(x), conv_b(x)
    s = F.relu(na(ha) + nb(hb))
    z = conv_c(s)
    nc(z)
    state = GaussianState(ha.mean((0, 2, 3)) + hb.mean((0, 2, 3)),
                          ha.var((0, 2, 3), unbiased=False) + hb.var((0, 2, 3), unbiased=False),
                          True)
    prior_mean, _ = predict_conv_moments(state, conv_c.weight.detach(), None, (6, 6), (1, 1),
                                         (1, 1), (1, 1), 1)
    expect = p * prior_mean + (1 - p) * z.detach().mean((0, 2, 3))
    torch.testing.assert_close(nc.running_mean, expect, atol=1e-5, rtol=1e-5)


def test_normalized_prior_input_propagates_output_distribution():
    torch.manual_seed(0)
    p = 0.5
    model = chain(BKN, prior_weight=p, momentum=1.0, gate_ratio=None,
                  prior_input='normalized')
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2)
        model[1].bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    model(x)
    v1 = model[0](x).var((0, 2, 3), unbiased=False).detach()
    state = GaussianState(model[1].bias.detach(),
                          model[1].weight.detach() ** 2 * v1 / (v1 + 1e-5), True)
    prior_mean, _ = predict_conv_moments(state, model[3].weight.detach(), None, (8, 8), (1, 1),
                                         (1, 1), (1, 1), 1)
    z = model[3](F.relu(model[1](model[0](x)))).detach()  # eval would differ; stats unchanged
    expect = p * prior_mean + (1 - p) * z.mean((0, 2, 3))
    # model[1] ran again in training mode, but with momentum=1 its running stats are unchanged
    torch.testing.assert_close(model[4].running_mean, expect, atol=1e-5, rtol=1e-5)


def test_prior_carries_gradients_to_weight_and_upstream_stats():
    torch.manual_seed(0)
    model = chain(BKN)
    x = torch.randn(2, 3, 8, 8)
    prior_mean, prior_var = model[4].predict(model[:4](x))
    g_w, g_w0 = torch.autograd.grad((prior_mean + prior_var).sum(),
                                    (model[3].weight, model[0].weight))
    # through the conv weight (as the official shared conv) and the 1st layer's statistics
    assert g_w.abs().sum() > 0 and g_w0.abs().sum() > 0


@pytest.mark.parametrize('prior_input', ['estimated', 'normalized'])
def test_gradcheck_float64(prior_input):
    torch.manual_seed(0)
    model = chain(BKN, c=3, prior_weight=0.6, gate_ratio=None,
                  prior_input=prior_input, track_running_stats=False).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = model[3].weight

    # differentiate w.r.t. the input and the middle conv weight (which enters both the direct
    # path and the 2nd layer's prior)
    def run(inp, weight):
        h = F.relu(model[1](model[0](inp)))
        z = F.conv2d(h, weight, None, 1, 1)
        h2 = F.relu(model[4](z))
        return model[7](model[6](h2))

    assert torch.autograd.gradcheck(run, (x, w.detach().clone().requires_grad_(True)))


def test_empty_input():
    torch.manual_seed(0)
    model = chain(BKN)
    before = copy.deepcopy(model.state_dict())
    y = model(torch.zeros(0, 3, 8, 8))
    assert y.shape == (0, 6, 4, 4)
    y.sum().backward()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    assert torch.isfinite(model[1].weight.grad).all()


def test_eval_is_running_stats_only():
    torch.manual_seed(0)
    model = chain(BKN)
    for _ in range(3):
        model(torch.randn(2, 3, 8, 8))
    model.eval()
    x = torch.randn(1, 3, 8, 8)
    h = model[0](x)
    layer = model[1]
    expect = F.batch_norm(h, layer.running_mean, layer.running_var, layer.weight, layer.bias,
                          False, 0.0, layer.eps)
    torch.testing.assert_close(layer(h), expect)
    torch.testing.assert_close(model(x), model(x))  # batch-independent, deterministic


def _train_step(model, opt, x):
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    return loss.detach()


def test_resume_reproduces_next_step():
    torch.manual_seed(0)
    model = chain(BKN)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xs = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    _train_step(model, opt, xs[0])
    _train_step(model, opt, xs[1])
    buf = io.BytesIO()
    torch.save(dict(model=model.state_dict(), opt=opt.state_dict()), buf)
    loss_a = _train_step(model, opt, xs[2])
    buf.seek(0)
    ckpt = torch.load(buf)
    torch.manual_seed(123)
    fresh = chain(BKN)
    fresh.load_state_dict(ckpt['model'])
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    fresh_opt.load_state_dict(ckpt['opt'])
    loss_b = _train_step(fresh, fresh_opt, xs[2])
    assert torch.equal(loss_a, loss_b)
    for (k, v), v2 in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(v, v2), k
