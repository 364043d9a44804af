"""BKN's fused training function: float64 gradcheck of every path of its hand-written backward
(no prior, fused, gated, with and without gradients arriving at the fused statistics), and
equality with the autograd composite it replaces."""
import pytest
import torch
import torch.nn.functional as F

from mmnorm_plugin.norms.bkn import _KalmanNormFunction


def _composite(x, pm, pv, w, b, p, gate, eps):
    """The straightforward autograd formulation (the module docstring's equations)."""
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    if pm is None:
        fm, fv = mean, var
    else:
        fm = p * pm + (1 - p) * mean
        fv = p * pv + (1 - p) * var + p * (1 - p) * (mean - pm) ** 2
        if gate is not None:
            keep = (pv / var).mean() < gate
            fm, fv = torch.where(keep, fm, mean), torch.where(keep, fv, var)
    scale = w / (fv + eps).sqrt()
    y = x * scale.view(1, -1, 1, 1) + (b - fm * scale).view(1, -1, 1, 1)
    return y, fm, fv


def _inputs(prior_scale):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) * 2 + 0.5)
    pm = torch.randn(3, generator=g, dtype=torch.float64)
    pv = torch.rand(3, generator=g, dtype=torch.float64) * prior_scale + 0.1
    w = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(3, generator=g, dtype=torch.float64)
    return [t.requires_grad_() for t in (x, pm, pv, w, b)]


@pytest.mark.parametrize('case', ['no_prior', 'fused', 'gated', 'no_gate'])
@pytest.mark.parametrize('outputs', ['y', 'all'])
def test_gradcheck_and_composite(case, outputs):
    x, pm, pv, w, b = _inputs(1000.0 if case == 'gated' else 1.0)
    gate = None if case == 'no_gate' else 100.0
    if case == 'no_prior':
        pm = pv = None

    def run(fn, *args):
        x_, pm_, pv_, w_, b_ = args
        y, fm, fv = fn(x_, pm_, pv_, w_, b_, 0.7, gate, 1e-5)[:3]
        # 'all': the fused statistics also feed something downstream (the next prior)
        return (y,) if outputs == 'y' else (y, fm * 1.3, fv.sqrt())

    args = (x, pm, pv, w, b)
    ours = run(_KalmanNormFunction.apply, *args)
    ref = run(_composite, *args)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    grads = [torch.randn_like(t) for t in ours]
    diff = [t for t in args if t is not None]
    g_ours = torch.autograd.grad(ours, diff, grads, allow_unused=True)
    g_ref = torch.autograd.grad(ref, diff, grads, allow_unused=True)
    for a, r in zip(g_ours, g_ref):
        if r is None or a is None:
            assert (a is None or not a.any()) and (r is None or not r.any())
        else:
            torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-10)
    if case == 'no_prior':
        assert torch.autograd.gradcheck(lambda x_, w_, b_: run(
            _KalmanNormFunction.apply, x_, None, None, w_, b_), (x, w, b))
    else:
        assert torch.autograd.gradcheck(lambda *a: run(_KalmanNormFunction.apply, *a), args)


def test_status_and_running_target():
    x, pm, pv, w, b = _inputs(1.0)
    out = _KalmanNormFunction.apply(x, pm, pv, w, b, 0.5, None, 1e-5)
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    n = x.numel() // 3
    expect = 0.5 * pv + 0.5 * var * n / (n - 1) + 0.25 * (mean - pm) ** 2
    torch.testing.assert_close(out[3], expect)
    assert not out[3].requires_grad and int(out[4]) == 1
    y = _KalmanNormFunction.apply(x, None, None, None, None, 0.5, None, 1e-5)[0]
    torch.testing.assert_close(y, F.batch_norm(x, None, None, training=True, eps=1e-5))


def _rectified_composite(mean, var):
    """The autograd composite that the closed-form backward replaces."""
    import math
    std = var.clamp_min(0).add(torch.finfo(var.dtype).tiny).sqrt()
    a = mean / std
    cdf = torch.special.ndtr(a)
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    first = mean * cdf + std * pdf
    second = (mean * mean + var) * cdf + mean * std * pdf
    return first, (second - first * first).clamp_min(0)


def test_rectified_gaussian_moments_backward():
    from mmnorm_plugin.norms.bkn_prior import rectified_gaussian_moments
    g = torch.Generator().manual_seed(0)
    mean = (torch.randn(12, generator=g, dtype=torch.float64) * 2).requires_grad_()
    var = (torch.rand(12, generator=g, dtype=torch.float64) * 3 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(rectified_gaussian_moments, (mean, var))
    # degenerate channels (var 0, var < 0 from rounding) match the composite too
    mean2 = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    var2 = torch.tensor([0.0, 0.0, -1e-12, 1.0], dtype=torch.float64, requires_grad=True)
    for m, v in ((mean, var), (mean2, var2)):
        ours, ref = rectified_gaussian_moments(m, v), _rectified_composite(m, v)
        gouts = [torch.randn_like(t) for t in ours]
        for a, r in zip(ours, ref):
            torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
        for a, r in zip(torch.autograd.grad(ours, (m, v), gouts),
                        torch.autograd.grad(ref, (m, v), gouts)):
            torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)
