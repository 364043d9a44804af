"""MABN: forward/backward against a hand computation, gradcheck, state, inference, mmdet glue."""
import copy
import math
import warnings

import pytest
import torch
from mmcv.cnn import build_norm_layer
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.models.layers import CenConv2d, fold_cen_conv
from mmnorm_plugin.norms.mabn import MABN


class ReferenceMABN:
    """The paper's algorithm written out literally with Python lists (no ring indices)."""

    def __init__(self, c, m, momentum, warmup, hold, r_max, eps, gamma, beta):
        self.m, self.mom, self.warmup, self.hold = m, momentum, warmup, hold
        self.r_max, self.eps = r_max, eps
        self.gamma, self.beta = gamma.clone(), beta.clone()
        self.R = torch.ones(c, dtype=gamma.dtype)
        self.chi2s, self.psis = [], []
        self.t = 0

    def step(self, x, grad_y):
        """One iteration: returns y, dL/dx, dL/dgamma, dL/dbeta for upstream grad_y."""
        self.t += 1
        t, c = self.t, x.shape[1]
        view = (1, c, 1, 1)
        self.chi2s.append((x ** 2).mean(dim=(0, 2, 3)))
        sma = not (t <= self.m or t < self.warmup)
        chi2 = torch.stack(self.chi2s[-self.m:]).mean(0) if sma else self.chi2s[-1]
        std = (chi2 + self.eps).sqrt()
        z = x / std.view(view)
        if t <= max(self.hold, self.warmup):
            r = torch.ones(c, dtype=x.dtype)
        else:
            r = (std / (self.R + self.eps).sqrt()).clamp(1 / self.r_max, self.r_max)
        self.last_r = r
        y = self.gamma.view(view) * r.view(view) * z + self.beta.view(view)
        self.R = (1 - self.mom) * self.R + self.mom * chi2
        g_hat = grad_y * (self.gamma * r).view(view)
        self.psis.append((g_hat * z).mean(dim=(0, 2, 3)))
        psi = torch.stack(self.psis[-self.m:]).mean(0) if sma else self.psis[-1]
        gx = (g_hat - z * psi.view(view)) / std.view(view)
        return y, gx, (grad_y * r.view(view) * z).sum((0, 2, 3)), grad_y.sum((0, 2, 3))


def _mabn(c=3, dtype=torch.float64, **kw):
    layer = MABN(c, **kw).to(dtype)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def test_build_and_bn_interfaces():
    name, layer = build_norm_layer(dict(type='MABN', buffer_size=4), 8, postfix=2)
    assert name == 'bn2' and isinstance(layer, _BatchNorm)
    assert layer.eps == 1e-5 and layer.momentum == 0.02
    assert set(layer.state_dict()) == {
        'weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked',
        'chi2_history', 'psi_history'}
    assert layer.chi2_history.shape == (4, 8)


@pytest.mark.parametrize('kwargs', [
    dict(buffer_size=0), dict(momentum=1.5), dict(momentum=0.0), dict(r_max=0.5),
    dict(warmup_iters=-1), dict(track_running_stats=False)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        MABN(4, **kwargs)


def test_official_keep_factor_warns():
    with pytest.warns(UserWarning, match='momentum=0.02'):
        MABN(4, momentum=0.98)


def test_bad_input_shapes():
    layer = MABN(4)
    with pytest.raises(ValueError, match='4-D'):
        layer(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match='channels'):
        layer(torch.randn(2, 3, 5, 5))


def test_matches_hand_computation_over_iterations():
    """Every phase: current stats, SMA fwd/bwd, r held at 1, r free, r clipped."""
    torch.manual_seed(1)
    c, m = 3, 3
    kw = dict(buffer_size=m, momentum=0.3, warmup_iters=4, renorm_hold_iters=6, r_max=1.3)
    layer = _mabn(c, **kw)
    ref = ReferenceMABN(c, m, 0.3, 4, 6, 1.3, layer.eps, layer.weight.detach(),
                        layer.bias.detach())
    clipped = free = 0
    for it in range(14):
        # changing scale so that r moves and sometimes hits the clip
        x = (torch.randn(2, c, 4, 5, dtype=torch.float64) * (1 + 0.4 * it % 3) + 0.2)
        x.requires_grad_(True)
        grad_y = torch.randn(2, c, 4, 5, dtype=torch.float64)
        y_ref, gx_ref, gw_ref, gb_ref = ref.step(x.detach(), grad_y)
        layer.zero_grad()
        y = layer(x)
        y.backward(grad_y)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(x.grad, gx_ref)
        torch.testing.assert_close(layer.weight.grad, gw_ref)
        torch.testing.assert_close(layer.bias.grad, gb_ref)
        torch.testing.assert_close(layer.running_var, ref.R)
        clipped += int(torch.isclose(ref.last_r, torch.tensor(1.3).double()).any()
                       or torch.isclose(ref.last_r, torch.tensor(1 / 1.3).double()).any())
        free += int(((ref.last_r - 1).abs() > 1e-3).any())
    assert layer.num_batches_tracked.item() == 14
    assert clipped > 0 and free > 0, 'the iterations must exercise r != 1 and the clip'


def test_sma_backward_differs_from_autograd():
    """The SMA replacement is real: with a window it is not the gradient of the forward."""
    torch.manual_seed(2)
    layer = _mabn(3, buffer_size=2, warmup_iters=0, renorm_hold_iters=100)
    for _ in range(3):
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
        layer(x).backward(torch.randn_like(x))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(x)
    layer(x).backward(g)
    chi2 = layer.chi2_history.mean(0).view(1, 3, 1, 1)
    y_auto = layer.weight.view(1, 3, 1, 1) * x / (chi2 + layer.eps).sqrt()
    (gx_auto,) = torch.autograd.grad(y_auto, x, g)
    assert not torch.allclose(x.grad, gx_auto)


def test_gradcheck_without_sma():
    """Warm-up (current-batch statistics, r = 1): the hand backward is the exact gradient."""
    layer = _mabn(3, warmup_iters=10**6, renorm_hold_iters=10**6)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_gradient_equals_autograd_with_constant_r():
    """Window of 1 (SMA == current) after the hold: dL/dx is autograd of the forward with
    r treated as a constant, which is what BRN-style renormalization prescribes."""
    torch.manual_seed(3)
    layer = _mabn(3, buffer_size=1, warmup_iters=0, renorm_hold_iters=0, r_max=10.0)
    layer.running_var.copy_(torch.tensor([0.3, 1.0, 16.0]))
    x = (torch.randn(2, 3, 3, 4, dtype=torch.float64) * 2).requires_grad_(True)
    g = torch.randn_like(x)
    layer(x).backward(g)

    x2 = x.detach().clone().requires_grad_(True)
    chi2 = (x2 ** 2).mean((0, 2, 3))
    r = ((chi2 + 1e-5).sqrt() / (torch.tensor([0.3, 1.0, 16.0]).double() + 1e-5).sqrt()).detach()
    assert ((r - 1).abs() > 0.1).all()
    y = (layer.weight * r).view(1, 3, 1, 1) * x2 / (chi2 + 1e-5).sqrt().view(1, 3, 1, 1)
    y.backward(g)
    torch.testing.assert_close(x.grad, x2.grad)


def test_psi_written_once_per_iteration():
    torch.manual_seed(4)
    layer = _mabn(3, buffer_size=2, warmup_iters=0, renorm_hold_iters=100)
    for _ in range(3):
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
        layer(x).backward(torch.randn_like(x))
    fresh = copy.deepcopy(layer)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(x)
    y = layer(x)
    torch.autograd.grad(y, x, g, retain_graph=True)
    after_first = layer.psi_history.clone()
    g2 = torch.autograd.grad(y, x, 2 * g)[0]
    torch.testing.assert_close(layer.psi_history, after_first)  # not written again
    # the second backward still used its own Psi in this iteration's slot
    (g_fresh,) = torch.autograd.grad(fresh(x), x, 2 * g)
    torch.testing.assert_close(g2, g_fresh)


def _train_steps(model, opt, inputs):
    for x, target in inputs:
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    return loss


def _tiny_net():
    return nn.Sequential(CenConv2d(3, 4, 3, padding=1, bias=False),
                         MABN(4, buffer_size=3, warmup_iters=4, renorm_hold_iters=5),
                         nn.ReLU(), CenConv2d(4, 2, 3, padding=1))


def test_resume_reproduces_next_iteration_exactly():
    torch.manual_seed(5)
    data = [(torch.randn(2, 3, 6, 6), torch.randn(2, 2, 6, 6)) for _ in range(10)]
    model = _tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _train_steps(model, opt, data[:9])
    ckpt = copy.deepcopy({'model': model.state_dict(), 'opt': opt.state_dict()})

    resumed = _tiny_net()
    resumed.load_state_dict(ckpt['model'])  # strict: every piece of state is in state_dict
    opt2 = torch.optim.SGD(resumed.parameters(), lr=0.05, momentum=0.9)
    opt2.load_state_dict(ckpt['opt'])
    loss_a = _train_steps(model, opt, data[9:])
    loss_b = _train_steps(resumed, opt2, data[9:])
    assert torch.equal(loss_a, loss_b)
    for (k, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert model[1].num_batches_tracked.item() == 10  # past warm-up, SMA and hold


def test_inference_is_bn_with_zero_mean_and_folds():
    from mmcv.cnn import fuse_conv_bn
    torch.manual_seed(6)
    model = _tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    _train_steps(model, opt, [(torch.randn(2, 3, 6, 6), torch.randn(2, 2, 6, 6))
                              for _ in range(7)])
    model.eval()
    norm = model[1]
    assert not norm.running_mean.any() and not torch.equal(norm.running_var,
                                                           torch.ones(4))
    x = torch.randn(2, 3, 6, 6)
    h = model[0](x)
    expected = (norm.weight.view(1, -1, 1, 1) * h / (norm.running_var.view(1, -1, 1, 1)
                + norm.eps).sqrt() + norm.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(norm(h), expected)
    state = copy.deepcopy(norm.state_dict())
    norm(h)
    assert all(torch.equal(v, norm.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        y = model(x)
        deployed = fuse_conv_bn(fold_cen_conv(copy.deepcopy(model)))
        assert not any(isinstance(m, (CenConv2d, MABN)) for m in deployed.modules())
        torch.testing.assert_close(deployed(x), y, rtol=1e-5, atol=1e-5)


def test_empty_input():
    layer = MABN(4, buffer_size=2)
    state = copy.deepcopy(layer.state_dict())
    x = torch.randn(0, 4, 7, 7, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.equal(layer.weight.grad, torch.zeros(4))
    assert all(torch.equal(v, layer.state_dict()[k]) for k, v in state.items())
    assert layer.eval()(torch.randn(0, 4, 7, 7)).shape == (0, 4, 7, 7)


@pytest.mark.parametrize('strict', [False, True])
def test_load_plain_bn_state_dict(strict):
    """A BN checkpoint loads even strictly (issue 10 item 5): the window starts empty."""
    bn = nn.BatchNorm2d(4)
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(3.0)
    bn.num_batches_tracked.fill_(1000)
    layer = MABN(4)
    layer.chi2_history.fill_(7.0)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter('always')
        result = layer.load_state_dict(bn.state_dict(), strict=strict)
    assert not result.missing_keys and not result.unexpected_keys
    assert not layer.running_mean.any()
    assert torch.equal(layer.running_var, bn.running_var)
    assert layer.num_batches_tracked.item() == 0  # warm-up starts over
    assert not layer.chi2_history.any() and not layer.psi_history.any()


def test_norm_eval_and_decay_rules_in_mmdet_resnet():
    from mmdet.models.backbones import ResNet
    from mmengine.optim import build_optim_wrapper
    net = ResNet(depth=18, base_channels=4, norm_cfg=dict(type='MABN'),
                 conv_cfg=dict(type='CenConv2d'), norm_eval=True, out_indices=(3,))
    net.train()
    mabns = [m for m in net.modules() if isinstance(m, MABN)]
    assert mabns and all(not m.training for m in mabns)
    assert isinstance(net.conv1, CenConv2d) and hasattr(net, 'bn1')
    wrapper = build_optim_wrapper(net, dict(
        optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4),
        paramwise_cfg=dict(norm_decay_mult=0.)))
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    assert decay[id(net.bn1.weight)] == 0 and decay[id(net.conv1.weight)] == 1e-4


def test_batch2_training_is_stable():
    """A small CenConv+MABN net at batch 2, through warm-up, SMA and free renorm, no NaN."""
    torch.manual_seed(7)
    kw = dict(buffer_size=16, warmup_iters=100, renorm_hold_iters=150)
    model = nn.Sequential(
        CenConv2d(3, 8, 3, padding=1, bias=False), MABN(8, **kw), nn.ReLU(),
        CenConv2d(8, 16, 3, stride=2, padding=1, bias=False), MABN(16, **kw), nn.ReLU(),
        CenConv2d(16, 16, 3, padding=1, bias=False), MABN(16, **kw), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    protos = torch.randn(4, 3, 12, 12)
    losses = []
    for _ in range(300):
        labels = torch.randint(0, 4, (2,))
        x = protos[labels] + 0.5 * torch.randn(2, 3, 12, 12)
        loss = nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert math.isfinite(loss.item())
        losses.append(loss.item())
    for p in list(model.parameters()) + list(model.buffers()):
        assert torch.isfinite(p).all()
    assert sum(losses[-50:]) / 50 < 0.5 * sum(losses[:50]) / 50  # it also learns
