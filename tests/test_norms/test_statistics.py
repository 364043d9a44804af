"""The stateless statistics maths: normalization with statistics that carry gradients, batch
moments."""
import pytest
import torch
import torch.nn.functional as F

from mmnorm_plugin.norms.statistics import batch_moments, normalize_with_stats


def test_normalize_with_stats_is_batch_norm_with_differentiable_stats():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    mean = torch.randn(4, dtype=torch.float64, requires_grad=True)
    var = torch.rand(4, dtype=torch.float64) + 0.5
    weight, bias = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    y = normalize_with_stats(x, mean, var, weight, bias, 1e-5)
    torch.testing.assert_close(
        y, F.batch_norm(x, mean.detach(), var, weight, bias, False, 0.0, 1e-5))
    y.sum().backward()  # native batch_norm refuses this gradient
    torch.testing.assert_close(mean.grad, -(weight / (var + 1e-5).sqrt()) * 18)
    outside = normalize_with_stats(x, None, var, None, None, 1e-5, eps_outside_sqrt=True)
    torch.testing.assert_close(outside, x / (var.sqrt() + 1e-5).view(1, -1, 1, 1))


@pytest.mark.parametrize('shape', [(2, 5, 4, 3), (1, 3, 1, 1), (3, 4, 1, 1), (7, 2, 2, 5)])
def test_batch_moments_equal_var_mean(shape):
    # a large common offset: a sum-of-squares formula would lose the variance to cancellation
    x = torch.randn(shape, dtype=torch.float64) * 1e-3 + 1e3
    var, mean = batch_moments(x)
    ref_var, ref_mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(var, ref_var, rtol=1e-6, atol=1e-15)
    # constant channels have variance 0 (rstd is inf with eps=0), half inputs give float32
    var, mean = batch_moments(torch.full((2, 3, 2, 2), 2.0, dtype=torch.float16))
    assert var.dtype == torch.float32 and torch.equal(var, torch.zeros(3))
    assert torch.equal(mean, torch.full((3,), 2.0))
