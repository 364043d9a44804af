"""CBN: numerical properties of the layer itself (no detector)."""
import copy
import io
import warnings

import pytest
import torch
from torch import nn

from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.conv_origin import find_producing_conv
from mmnorm_plugin.norms.iteration_clock import end_iteration


def _pair(cin=3, c=4, k=3, groups=1, bias=False, buffer_num=3, dtype=torch.float64, **kw):
    conv = nn.Conv2d(cin, c, k, padding=k // 2, groups=groups, bias=bias).to(dtype)
    norm = CBN(c, buffer_num=buffer_num, **kw).to(dtype)
    return conv, norm


def _step(conv):
    """What an optimizer step does to CBN (weights kept): the iteration ends."""
    end_iteration()


def _used_stats(x, y):
    """Mean and variance a no-affine, eps=0 CBN used: y = (x - mean) / sqrt(var) per channel."""
    dims = (0, 2, 3)
    std = x.std(dim=dims) / y.std(dim=dims)
    mean = x.mean(dim=dims) - std * y.mean(dim=dims)
    return mean, std**2


def _pooled(xs):
    cat = torch.cat(xs)
    return cat.mean(dim=(0, 2, 3)), cat.var(dim=(0, 2, 3), unbiased=False)


def test_buffer_num_zero_is_batchnorm():
    bn = nn.BatchNorm2d(5).double()
    cbn = CBN(5, buffer_num=0).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    cbn.load_state_dict(bn.state_dict())
    for it in range(3):
        x = (torch.randn(2, 5, 4, 3, dtype=torch.float64) * 3 + 2).requires_grad_()
        g = torch.randn(2, 5, 4, 3, dtype=torch.float64)
        y_ref = bn(x)
        grads_ref = torch.autograd.grad(y_ref, (x, bn.weight, bn.bias), g)
        y = cbn(x)
        grads = torch.autograd.grad(y, (x, cbn.weight, cbn.bias), g)
        torch.testing.assert_close(y, y_ref)
        for a, b in zip(grads, grads_ref):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(cbn.running_mean, bn.running_mean)
    torch.testing.assert_close(cbn.running_var, bn.running_var)
    assert cbn.num_batches_tracked == bn.num_batches_tracked == 3
    bn.eval(), cbn.eval()
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(cbn(x), bn(x))


def test_burnin_is_batchnorm_then_window():
    conv, cbn = _pair(buffer_num=2, burnin_iters=2, affine=False, eps=0.0)
    bn = nn.BatchNorm2d(4, affine=False, eps=1e-30).double()  # torch refuses eps=0
    xs = []
    for it in range(3):
        x = conv(torch.randn(2, 3, 5, 5, dtype=torch.float64))
        y = cbn(x)
        assert cbn.window_active == (it >= 2)  # during iteration it + 1
        _step(conv)
        xs.append(x.detach())
        if it < 2:
            torch.testing.assert_close(y, bn(x))
            assert cbn.hist_len == 0
    # the window starts at call burnin_iters + 1 with an empty history, as in the official code
    assert cbn.window_active and cbn.hist_len == 1
    x = conv(torch.randn(2, 3, 5, 5, dtype=torch.float64))
    mean, var = _used_stats(x.detach(), cbn(x).detach())
    ref_mean, ref_var = _pooled([xs[-1], x.detach()])
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)


@pytest.mark.parametrize('frozen', ['none', 'weight', 'no_grad_input'])
@pytest.mark.parametrize('groups', [1, 2])
def test_unchanged_weights_give_pooled_window_statistics(frozen, groups):
    conv, cbn = _pair(cin=4, c=6, groups=groups, bias=True, buffer_num=3, affine=False, eps=0.0)
    if frozen == 'weight':
        conv.requires_grad_(False)
    xs = []
    for it in range(6):
        z = torch.randn(2, 4, 5, 5, dtype=torch.float64)
        if frozen == 'weight':
            z.requires_grad_()  # conv output has a grad_fn, but its weight is constant
        if frozen == 'no_grad_input':
            with torch.no_grad():
                x = conv(z)
        else:
            x = conv(z)
        y = cbn(x)
        _step(conv)
        xs.append(x.detach())
    window = xs[-4:]  # current + buffer_num past iterations
    mean, var = _used_stats(xs[-1], y.detach())
    ref_mean, ref_var = _pooled(window)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)
    # compensation only costs memory where a trainable conv weight exists
    assert (cbn.hist_var_grad.numel() > 0) == (frozen == 'none')


def _compensation_errors(step, rho):
    """|stats used - true stats| when the conv weight moved by ``step`` since the past batch."""
    torch.manual_seed(1)
    conv, cbn = _pair(cin=3, c=4, buffer_num=1, affine=False, eps=0.0, rho=rho)
    direction = torch.randn_like(conv.weight)
    z_old = torch.randn(2, 3, 6, 6, dtype=torch.float64) + 0.5
    z_new = torch.randn(2, 3, 6, 6, dtype=torch.float64) + 0.5
    cbn(conv(z_old))
    with torch.no_grad():
        conv.weight.add_(step * direction)
    _step(conv)
    x_new = conv(z_new)
    mean, var = _used_stats(x_new.detach(), cbn(x_new).detach())
    with torch.no_grad():
        true_mean, true_var = _pooled([conv(z_old), x_new.detach()])
    return (mean - true_mean).abs().max().item(), (var - true_var).abs().max().item()


def test_compensation_beats_naive_average_with_second_order_error():
    # steps of 5% and 0.5% of the weights' scale (~0.19); SGD steps are usually smaller.
    # (At ~50% the second-order term dominates and the naive variance can be closer.)
    for step, factor in ((1e-2, 0.5), (1e-3, 0.1)):
        mean_err, var_err = _compensation_errors(step, rho=1.0)
        naive_mean_err, naive_var_err = _compensation_errors(step, rho=0.0)
        assert mean_err < 1e-12  # μ is linear in W: the Taylor step is exact
        assert naive_mean_err > 0.1 * step
        assert var_err < factor * naive_var_err
    # halving the step divides the error by ~4 (second order), the naive one by ~2
    ratio = _compensation_errors(0.02, 1.0)[1] / _compensation_errors(0.01, 1.0)[1]
    naive_ratio = _compensation_errors(0.02, 0.0)[1] / _compensation_errors(0.01, 0.0)[1]
    assert 3.5 < ratio < 4.5
    assert 1.5 < naive_ratio < 2.5


@pytest.mark.parametrize('geometry', [
    dict(stride=1, padding=1, dilation=1, groups=1),
    dict(stride=2, padding=0, dilation=2, groups=2),
    dict(stride=1, padding=1, dilation=1, groups=6),  # depthwise
])
def test_statistic_derivatives_match_autograd(geometry):
    """The cheap ∂μ/∂W, ∂σ²/∂W equal autograd (the official code's two grad calls), per row."""
    conv = nn.Conv2d(6, 6, 3, bias=True, **geometry).double()
    cbn = CBN(6, buffer_num=1).double()
    z = torch.randn(2, 6, 9, 8, dtype=torch.float64)
    x = conv(z)
    weight, (d_mean, d_var) = cbn._conv_terms(x, x.detach().mean(dim=(0, 2, 3)),
                                              find_producing_conv(x))
    ref_mean = torch.autograd.grad(x.mean(dim=(0, 2, 3)).sum(), conv.weight, retain_graph=True)[0]
    ref_var = torch.autograd.grad(x.var(dim=(0, 2, 3), unbiased=False).sum(), conv.weight)[0]
    g = geometry['groups']
    torch.testing.assert_close(d_var, ref_var.reshape(6, -1))
    torch.testing.assert_close(d_mean.repeat_interleave(6 // g, dim=0), ref_mean.reshape(6, -1))
    torch.testing.assert_close(weight, conv.weight.detach().reshape(6, -1))


def test_gradcheck_through_window():
    conv, cbn = _pair(cin=2, c=3, buffer_num=2, bias=True, eps_outside_sqrt=False)
    with torch.no_grad():
        cbn.weight.uniform_(0.5, 1.5)
        cbn.bias.uniform_(-1, 1)
    for _ in range(3):  # fill the window, weights moving between iterations
        cbn(conv(torch.randn(2, 2, 4, 4, dtype=torch.float64)))
        with torch.no_grad():
            conv.weight.add_(0.05 * torch.randn_like(conv.weight))
        _step(conv)

    def f(z):  # a fresh copy per call: the layer's forward is stateful
        return copy.deepcopy(cbn)(conv(z))

    z = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (z, ))


def test_eps_outside_sqrt_option():
    cbn = CBN(3, buffer_num=0, eps=0.1, eps_outside_sqrt=True, affine=False).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    ref = (x - mean.view(1, -1, 1, 1)) / (var.sqrt().view(1, -1, 1, 1) + 0.1)
    torch.testing.assert_close(cbn(x), ref)
    cbn.eval()
    ref = (x - cbn.running_mean.view(1, -1, 1, 1)) / (
        cbn.running_var.sqrt().view(1, -1, 1, 1) + 0.1)
    torch.testing.assert_close(cbn(x), ref)


def _train(conv, cbn, opt, zs):
    out = None
    for z in zs:
        out = cbn(conv(z))
        (out * out.detach().flip(0)).sum().backward()
        opt.step()
        opt.zero_grad()
    return out


def _model():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=2, burnin_iters=1)
    opt = torch.optim.SGD(list(conv.parameters()) + list(cbn.parameters()), lr=0.05,
                          momentum=0.9)
    return conv, cbn, opt


def test_resume_reproduces_next_iteration_exactly():
    zs = [torch.randn(2, 3, 6, 6) for _ in range(6)]
    conv, cbn, opt = _model()
    _train(conv, cbn, opt, zs[:5])
    buf = io.BytesIO()
    torch.save(dict(conv=conv.state_dict(), cbn=cbn.state_dict(), opt=opt.state_dict()), buf)
    expected = _train(conv, cbn, opt, zs[5:])

    conv2, cbn2, opt2 = _model()
    buf.seek(0)
    ckpt = torch.load(buf)
    conv2.load_state_dict(ckpt['conv'])
    cbn2.load_state_dict(ckpt['cbn'])  # strict: lazily sized buffers are resized on load
    opt2.load_state_dict(ckpt['opt'])
    got = _train(conv2, cbn2, opt2, zs[5:])
    assert torch.equal(got, expected)
    for (name, a), (_, b) in zip(cbn.state_dict().items(), cbn2.state_dict().items()):
        assert torch.equal(a, b), name


def test_ddp_style_state_dict_round_trip_and_buffer_identity():
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    class Wrapper(nn.Module):  # what DDP / MMDistributedDataParallel do to keys

        def __init__(self, module):
            super().__init__()
            self.module = module

    conv, cbn, opt = _model()
    model = nn.Sequential(conv, cbn)
    ids = [id(b) for b in model.buffers()]
    _train(conv, cbn, opt, [torch.randn(2, 3, 6, 6) for _ in range(4)])
    # lazy allocation resizes in place: DDP keeps references to these buffer objects
    assert [id(b) for b in model.buffers()] == ids
    assert cbn.hist_var_grad.shape == (1, 4, 2, 27)  # (sites, C, buffer_num, C_in·kh·kw)
    state = Wrapper(model).state_dict()
    assert all(k.startswith('module.') for k in state)

    fresh = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), CBN(4, buffer_num=2, burnin_iters=1))
    fresh_ids = [id(b) for b in fresh.buffers()]
    _load_checkpoint_to_model(fresh, dict(state_dict=state), strict=True)
    assert [id(b) for b in fresh.buffers()] == fresh_ids
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    # .to() moves the whole history, counters keep their integer dtype
    fresh.to(torch.float64)
    assert fresh[1].hist_var_grad.dtype == torch.float64
    assert fresh[1].num_iters.dtype == torch.long and fresh[1].num_iters == 4


def test_batchnorm_checkpoint_loads_without_missing_keys():
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_()
        bn.running_var.uniform_(1, 2)
    cbn = CBN(4)
    conv = nn.Conv2d(3, 4, 3)
    for _ in range(3):  # some history that a BN checkpoint must reset
        cbn(conv(torch.randn(2, 3, 5, 5)))
        _step(conv)
    result = cbn.load_state_dict(bn.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert cbn.num_sites == 0 and cbn.num_iters == 0 and cbn.hist_var_grad.numel() == 0
    bn.eval(), cbn.eval()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(cbn(x), bn(x))
    # a CBN checkpoint missing only part of the history is an error, not a silent reset
    partial = {k: v for k, v in _trained()[1].state_dict().items() if k != 'hist_mean'}
    with pytest.raises(RuntimeError, match='hist_mean'):
        CBN(4).load_state_dict(partial)


def test_autocast_bf16_on_cpu():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    cbn = CBN(8, buffer_num=2)
    ref_conv, ref_cbn = copy.deepcopy(conv), copy.deepcopy(cbn)
    zs = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    for z in zs:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = cbn(conv(z))
        y.float().sum().backward()
        y_ref = ref_cbn(ref_conv(z))
        _step(conv)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    assert cbn.hist_var_grad.dtype == torch.float32 and cbn.hist_var_grad.abs().sum() > 0
    torch.testing.assert_close(y.float(), y_ref, atol=0.1, rtol=0.05)
    torch.testing.assert_close(cbn.running_var, ref_cbn.running_var, atol=0.02, rtol=0.02)


def test_empty_input():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=2)
    for _ in range(2):
        cbn(conv(torch.randn(2, 3, 5, 5)))
    state = copy.deepcopy(cbn.state_dict())
    y = cbn(conv(torch.randn(0, 3, 7, 7)))
    assert y.shape == (0, 4, 7, 7)
    y.sum().backward()
    for key, value in cbn.state_dict().items():  # an empty batch is not an iteration
        assert torch.equal(value, state[key]), key
    cbn.eval()
    assert cbn(torch.randn(0, 4, 7, 7)).shape == (0, 4, 7, 7)


def test_eval_and_norm_eval_leave_state_untouched():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4)
    cbn(conv(torch.randn(2, 3, 5, 5)))
    state = copy.deepcopy(cbn.state_dict())
    cbn.eval()
    cbn(conv(torch.randn(2, 3, 5, 5)))
    for key, value in cbn.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_bad_input_and_arguments():
    cbn = CBN(4)
    with pytest.raises(ValueError, match='4-D'):
        cbn(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match='channels'):
        cbn(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match='more than 1 value'):
        cbn(torch.randn(1, 4, 1, 1))
    with pytest.raises(ValueError, match='buffer_num'):
        CBN(4, buffer_num=-1)
    with pytest.raises(ValueError, match='burnin_iters'):
        CBN(4, burnin_iters=1.5)


def test_non_conv_producer_warns_once_and_uses_plain_average():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=2, affine=False, eps=0.0).double()
    conv.double()
    pool = nn.AvgPool2d(2)
    xs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(3):
            x = pool(conv(torch.randn(2, 3, 6, 6, dtype=torch.float64)))
            y = cbn(x)
            xs.append(x.detach())
            _step(conv)
    messages = [str(w.message) for w in caught if 'not by a Conv2d' in str(w.message)]
    assert len(messages) == 1 and 'AvgPool2D' in messages[0]
    mean, var = _used_stats(xs[-1], y.detach())
    ref_mean, ref_var = _pooled(xs)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)


def test_conv_shape_change_restarts_window():
    cbn = CBN(4, buffer_num=2)
    for cin in (3, 3, 5):
        conv = nn.Conv2d(cin, 4, 3)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            cbn(conv(torch.randn(2, cin, 5, 5)))
        _step(conv)
    assert cbn.hist_len == 1 and cbn.hist_var_grad.shape == (1, 4, 2, 45)


def test_matches_official_style_implementation():
    """Same numbers as the benchmark's restatement of the official algorithm (lists of
    weight copies, two autograd.grad calls), with the official eps form, weights moving."""
    import importlib.util
    import os.path as osp
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'benchmarks', 'bench_cbn.py')
    spec = importlib.util.spec_from_file_location('bench_cbn', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    official = bench.OfficialStyleCBN(4, buffer_num=2, eps=1e-3).double()
    ours = CBN(4, buffer_num=2, eps=1e-3, eps_outside_sqrt=True).double()
    for _ in range(5):
        x = conv(torch.randn(2, 3, 6, 6, dtype=torch.float64))
        torch.testing.assert_close(ours(x), official(x))
        with torch.no_grad():
            conv.weight.add_(0.02 * torch.randn_like(conv.weight))
        _step(conv)


# ----------------------------------------------------------------- gradient semantics
def _windowed(groups=1, eps_outside_sqrt=False, grad_through_compensation=True, buffer_num=2):
    """A conv + CBN whose window is full and whose conv weight moved since each entry."""
    torch.manual_seed(0)
    conv, cbn = _pair(cin=4, c=4, groups=groups, buffer_num=buffer_num, eps=1e-3,
                      eps_outside_sqrt=eps_outside_sqrt,
                      grad_through_compensation=grad_through_compensation)
    with torch.no_grad():
        cbn.weight.uniform_(0.5, 1.5)
        cbn.bias.uniform_(-1, 1)
    for _ in range(buffer_num + 1):
        cbn(conv(torch.randn(2, 4, 4, 4, dtype=torch.float64)))
        with torch.no_grad():
            conv.weight.add_(0.05 * torch.randn_like(conv.weight))
        _step(conv)
    return conv, cbn


@pytest.mark.parametrize('groups', [1, 2])
@pytest.mark.parametrize('eps_outside_sqrt', [False, True])
def test_gradcheck_includes_conv_weight_through_compensation(groups, eps_outside_sqrt):
    """The default gradient is the exact derivative of the forward, conv weight included:
    the compensated past statistics are functions of the current weight."""
    conv, cbn = _windowed(groups, eps_outside_sqrt)

    def f(z, w, gamma, beta):
        layer = copy.deepcopy(cbn)
        del layer.weight, layer.bias  # plain tensors, so that gradcheck sees their gradients
        layer.weight, layer.bias = gamma, beta
        return layer(torch.nn.functional.conv2d(z, w, padding=1, groups=groups))

    z = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    w = conv.weight.detach().clone().requires_grad_()
    gamma = cbn.weight.detach().clone().requires_grad_()
    beta = cbn.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (z, w, gamma, beta))


def test_official_gradient_ignores_compensation():
    """grad_through_compensation=False is the official gradient: the window statistics
    count as constants except the current batch's share, so dL/dW differs from the exact one
    by exactly the compensation path, and dL/dx is the same."""
    conv, cbn = _windowed(grad_through_compensation=True)
    official = copy.deepcopy(cbn)
    official.grad_through_compensation = False
    z = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    grads = []
    for layer in (cbn, official):
        conv.zero_grad()
        z.grad = None
        y = layer(conv(z))
        y.backward(g)
        grads.append((z.grad.clone(), conv.weight.grad.clone(), y.detach()))
    torch.testing.assert_close(grads[0][2], grads[1][2])  # same forward
    torch.testing.assert_close(grads[0][0], grads[1][0])  # same input gradient
    assert (grads[0][1] - grads[1][1]).abs().max() > 1e-3  # the weight gradients differ


def test_full_gradient_keeps_batchnorm_scale_invariance():
    """BN's output ignores the scale of the conv weight, so its weight gradient is orthogonal
    to the weight. CBN's forward inherits that (compensation is linear in W); only the full
    gradient does too — the official one has a radial component, which grows the weights."""
    cos = {}
    for full in (True, False):
        conv, cbn = _windowed(grad_through_compensation=full, buffer_num=3)
        cbn.bias.data.zero_()
        z = torch.randn(2, 4, 4, 4, dtype=torch.float64)
        y = cbn(conv(z))
        (y * torch.randn_like(y)).sum().backward()
        w, gw = conv.weight.detach(), conv.weight.grad
        cos[full] = ((w * gw).sum() / (w.norm() * gw.norm())).abs().item()
    assert cos[True] < 0.1 * cos[False]
    assert cos[False] > 1e-3


# --------------------------------------------------------------------- hardening
def test_non_finite_batch_never_enters_window_or_running_stats():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    ref_conv = copy.deepcopy(conv)
    cbn, ref = CBN(4, buffer_num=3), CBN(4, buffer_num=3)
    clean = [torch.randn(2, 3, 6, 6) for _ in range(6)]
    bad = torch.randn(2, 3, 6, 6)
    bad[0, :, 1, 1] = float('nan')
    for z in clean[:2]:
        cbn(conv(z)), ref(ref_conv(z))
    assert not torch.isfinite(cbn(conv(bad))).all()
    for z in clean[2:]:
        y, y_ref = cbn(conv(z)), ref(ref_conv(z))
        assert torch.isfinite(y).all()
    for name, buf in cbn.named_buffers():
        assert torch.isfinite(buf.float()).all(), name
    # after the window cycled, the output equals a run that never saw the bad batch
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(cbn.running_mean, ref.running_mean * 1, rtol=0.3, atol=0.3)


def test_history_does_not_cancel_for_large_mean():
    """float32 with |μ|/σ = 1e4: the window variance stays right (E[x²] − E[x]² gave 2x)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 1, bias=True)
    with torch.no_grad():
        conv.bias.fill_(1e4)
    cbn = CBN(3, buffer_num=3, affine=False)
    for _ in range(5):
        y = cbn(conv(torch.randn(4, 2, 8, 8)))
        with torch.no_grad():  # an optimizer step that moves the weights a little
            conv.weight.mul_(1.01)
        _step(conv)
    assert cbn.num_sites == 1 and cbn.hist_len == 3
    std = y.detach().std(dim=(0, 2, 3))
    torch.testing.assert_close(std, torch.ones(3), atol=0.05, rtol=0)


def _trained(buffer_num=2, steps=4):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=buffer_num)
    for _ in range(steps):
        cbn(conv(torch.randn(2, 3, 6, 6))).sum().backward()
        _step(conv)
    return conv, cbn


def test_checkpoint_with_another_window_restarts_it():
    _, src = _trained(buffer_num=3)
    dst = CBN(4, buffer_num=2)
    result = dst.load_state_dict(src.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(dst.running_var, src.running_var)
    assert dst.num_iters == 4 and dst.num_sites == 0 and dst.hist_var_grad.numel() == 0
    conv = nn.Conv2d(3, 4, 3, padding=1)
    for _ in range(3):  # trains on, window refills with its own size
        dst(conv(torch.randn(2, 3, 6, 6)))
        _step(conv)
    assert dst.hist_len == 2 and dst.hist_var_grad.shape == (1, 4, 2, 27)
    # a CBN not fed by a conv (no derivative history) crashed here with IndexError
    nonconv = CBN(4, buffer_num=3)
    for _ in range(3):
        nonconv(torch.randn(2, 4, 5, 5))
    dst2 = CBN(4, buffer_num=5)
    dst2.load_state_dict(nonconv.state_dict(), strict=False)
    dst2(torch.randn(2, 4, 5, 5))
    assert dst2.hist_len == 1


def test_failed_load_leaves_layer_untouched():
    _, cbn = _trained()
    before = copy.deepcopy(cbn.state_dict())
    bad = copy.deepcopy(before)
    bad['running_mean'] = torch.zeros(5)
    with pytest.raises(RuntimeError, match='running_mean'):
        cbn.load_state_dict(bad)
    partial = {k: v for k, v in before.items() if k != 'hist_var'}
    with pytest.raises(RuntimeError, match='hist_var'):
        cbn.load_state_dict(partial)
    bad_history = copy.deepcopy(before)
    bad_history['hist_var_grad'] = torch.zeros(1, 3, 2, 27)
    with pytest.raises(RuntimeError, match='derivative history'):
        cbn.load_state_dict(bad_history)
    for key, value in cbn.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert cbn._iters == int(cbn.num_iters)


def test_older_layout_checkpoint_keeps_running_stats():
    _, cbn = _trained()
    state = {k: v for k, v in cbn.state_dict().items()
             if k not in ('hist_var', 'hist_var_proj', 'hist_var_grad')}
    state.update(hist_sqmean=torch.zeros(2, 4), hist_sqmean_proj=torch.zeros(2, 4),
                 hist_sqmean_grad=torch.zeros(2, 4, 27))
    fresh = CBN(4, buffer_num=2)
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(fresh.running_mean, cbn.running_mean)
    assert fresh.num_iters == 4 and fresh.num_sites == 0


def test_counters_are_mirrored_no_host_sync_in_training():
    """A training step reads no tensor back to the host (each read drains a CUDA stream)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountSyncs(TorchDispatchMode):

        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
                self.count += 1
            return func(*args, **(kwargs or {}))

    for momentum in (0.1, None):
        conv = nn.Conv2d(3, 4, 3, padding=1, groups=1)
        cbn = CBN(4, buffer_num=2, burnin_iters=1, momentum=momentum)
        cbn.load_state_dict(CBN(4, buffer_num=2).state_dict())
        for _ in range(4):
            with CountSyncs() as counter:
                cbn(conv(torch.randn(2, 3, 6, 6))).square().sum().backward()
            assert counter.count == 0
            _step(conv)
        assert cbn.window_active and cbn.hist_len == 2


@pytest.mark.parametrize('eps_outside_sqrt', [False, True])
def test_eval_mode_scripts_as_batchnorm(eps_outside_sqrt):
    conv, cbn = _trained()
    cbn.eps_outside_sqrt = eps_outside_sqrt
    model = nn.Sequential(conv, cbn).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(scripted(x), model(x))
    with pytest.raises(RuntimeError, match='eval mode'):
        torch.jit.script(nn.Sequential(conv, cbn).train())


# ------------------------------------------------------------------ call sites, with_cp
def test_shared_head_keeps_one_window_per_level_and_counts_iterations():
    """A head shared across FPN levels (RetinaNet, FCOS): one window per call site, burn-in
    in optimizer steps. Each level's statistics must pool that level's past batches only."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=2, burnin_iters=2, affine=False, eps=0.0).double()
    conv.double()
    opt = torch.optim.SGD(conv.parameters(), lr=0.0)  # steps that keep the weights
    scales = (1.0, 3.0, 10.0)  # three levels with very different statistics
    seen = {lvl: [] for lvl in range(3)}
    for it in range(5):
        ys, loss = [], 0
        for lvl, scale in enumerate(scales):
            x = conv(scale * torch.randn(2, 3, 5, 5, dtype=torch.float64) + lvl)
            y = cbn(x)
            loss = loss + y.square().sum()
            ys.append((x.detach(), y.detach()))
            seen[lvl].append(x.detach())
        loss.backward()
        assert cbn.num_iters == it + 1 and cbn.window_active == (it + 1 > 2)
        opt.step()
        opt.zero_grad()
    assert cbn.num_sites == 3 and cbn.hist_len.tolist() == [2, 2, 2]
    for lvl, (x, y) in enumerate(ys):  # last iteration: the window of its own level
        mean, var = _used_stats(x, y)
        ref_mean, ref_var = _pooled(seen[lvl][-3:])
        torch.testing.assert_close(mean, ref_mean)
        torch.testing.assert_close(var, ref_var)


def test_skipped_optimizer_step_wraps_around_known_sites():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=2)
    for it in range(2):  # learn: two sites per iteration
        for _ in range(2):
            cbn(conv(torch.randn(2, 3, 5, 5)))
        _step(conv)
    for _ in range(4):  # two iterations whose optimizer step was skipped (AMP overflow)
        cbn(conv(torch.randn(2, 3, 5, 5)))
    assert cbn.num_sites == 2 and cbn.num_iters == 4


def test_calls_without_weight_updates_are_bounded():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=2, max_call_sites=3)
    for _ in range(10):  # a loop that never steps an optimizer
        cbn(conv(torch.randn(2, 3, 5, 5)))
    assert cbn.num_sites == 3


@pytest.mark.parametrize('use_reentrant', [True, False])
def test_activation_checkpointing_is_refused(use_reentrant):
    from torch.utils.checkpoint import checkpoint
    conv = nn.Conv2d(3, 4, 3, padding=1)
    cbn = CBN(4, buffer_num=2)
    z = torch.randn(2, 3, 5, 5, requires_grad=True)
    y = checkpoint(lambda t: cbn(conv(t)), z, use_reentrant=use_reentrant)
    with pytest.raises(RuntimeError, match='with_cp=False'):
        y.sum().backward()


@pytest.mark.parametrize('running_stats', ['window', 'batch'])
def test_running_statistics_follow_the_chosen_source(running_stats):
    """'window' (default): the statistics training normalized with; 'batch': BN's update."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    cbn = CBN(4, buffer_num=2, momentum=1.0, affine=False, eps=0.0,
              running_stats=running_stats).double()
    for _ in range(3):
        x = conv(torch.randn(2, 3, 5, 5, dtype=torch.float64) * 2 + 1)
        y = cbn(x)
        _step(conv)
    mean, var = _used_stats(x.detach(), y.detach())
    m = x[:, 0].numel()
    if running_stats == 'window':
        count = 3 * m  # a full window: the current batch and 2 past ones
        torch.testing.assert_close(cbn.running_mean, mean)
        torch.testing.assert_close(cbn.running_var, var * count / (count - 1))
    else:
        torch.testing.assert_close(cbn.running_mean, x.detach().mean(dim=(0, 2, 3)))
        torch.testing.assert_close(cbn.running_var, x.detach().var(dim=(0, 2, 3)))
