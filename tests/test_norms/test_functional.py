"""The shared functional core: producing-conv lookup, normalization with statistics, EMA."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmnorm_plugin.norms.functional import (check_input_4d, find_producing_conv,
                                            normalize_with_stats, update_running_stats)


@pytest.mark.parametrize('bias', [False, True])
def test_find_producing_conv_reads_the_conv_from_autograd(bias):
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1, groups=1, bias=bias)
    x = torch.randn(2, 3, 9, 9)
    origin = find_producing_conv(conv(x))
    assert origin.parameter is conv.weight
    torch.testing.assert_close(origin.weight, conv.weight.detach())
    torch.testing.assert_close(origin.input, x)
    assert (origin.stride, origin.padding, origin.dilation, origin.groups) == \
        ((2, 2), (1, 1), (1, 1), 1)
    assert origin.has_bias is bias
    assert (origin.bias is conv.bias) if bias else origin.bias is None


def test_find_producing_conv_through_autocast_and_frozen_weights():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 5, 5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        origin = find_producing_conv(conv(x))
    assert origin.parameter is conv.weight and origin.bias is conv.bias
    assert origin.weight.dtype == torch.bfloat16  # the weight as the conv used it

    conv.requires_grad_(False)
    origin = find_producing_conv(conv(x.requires_grad_()))
    assert origin.parameter is None and origin.has_bias and origin.bias is None
    torch.testing.assert_close(origin.weight, conv.weight)


def test_find_producing_conv_is_none_without_a_conv():
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 5, 5)
    assert find_producing_conv(torch.relu(conv(x))) is None
    assert find_producing_conv(x) is None
    with torch.no_grad():
        assert find_producing_conv(conv(x)) is None
    deconv = nn.ConvTranspose2d(3, 4, 3)
    assert find_producing_conv(deconv(x)) is None


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


def test_update_running_stats_follows_torch_momentum_convention():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.zero_()
    running = bn.running_mean
    update_running_stats(bn, 'running_mean', torch.ones(3), 0.1, None)
    torch.testing.assert_close(running, torch.full((3, ), 0.1))
    tracked = torch.tensor(4)
    update_running_stats(bn, 'running_mean', torch.ones(3), None, tracked)  # cumulative: 1/4
    torch.testing.assert_close(running, torch.full((3, ), 0.1 + 0.9 / 4))
    assert bn.running_mean is running  # eager: in place, the buffer keeps its identity


def test_check_input_4d_names_the_layer_and_shape():
    layer = nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match=r'BatchNorm2d expects a 4-D NCHW input, got shape \(2, 4\)'):
        check_input_4d(layer, torch.zeros(2, 4))
    with pytest.raises(ValueError, match='got an input with 3 channels'):
        check_input_4d(layer, torch.zeros(1, 3, 2, 2))


def test_update_running_stats_skips_non_finite_entries_without_sync():
    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    bn = nn.BatchNorm2d(3)
    running = bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    tracked = torch.tensor(2)
    with count_host_syncs() as syncs:
        finite = update_running_stats(bn, 'running_mean', torch.tensor([3.0, float('nan'),
                                                                        float('inf')]),
                                      None, tracked)
    assert syncs.total == 0  # before: num_batches_tracked.item() for momentum=None
    torch.testing.assert_close(running, torch.tensor([2.0, 2.0, 3.0]))
    assert finite.tolist() == [True, False, False]
    update_running_stats(bn, 'running_mean', torch.ones(3), None, 4)  # a Python count too
    torch.testing.assert_close(running, torch.tensor([1.75, 1.75, 2.5]))


def test_input_checks_dtype_and_values_per_statistic():
    from mmnorm_plugin.norms.functional import check_input_dtype, check_values_per_statistic
    check_input_dtype(torch.zeros(1, dtype=torch.bfloat16), torch.float32, 'L')  # autocast
    check_input_dtype(torch.zeros(1, dtype=torch.float64), torch.float64, 'L')
    with pytest.raises(ValueError, match='L holds its statistics in torch.float32'):
        check_input_dtype(torch.zeros(1, dtype=torch.float64), torch.float32, 'L')
    with pytest.raises(ValueError, match='L holds its statistics in torch.float16'):
        check_input_dtype(torch.zeros(1, dtype=torch.bfloat16), torch.float16, 'L')
    check_values_per_statistic(2, 'L', [2, 1, 1, 1])
    with pytest.raises(ValueError, match=r'input size \(1, 4, 1, 1\)'):
        check_values_per_statistic(1, 'L', [1, 4, 1, 1])


@pytest.mark.parametrize('shape', [(2, 5, 4, 3), (1, 3, 1, 1), (3, 4, 1, 1), (7, 2, 2, 5)])
def test_batch_moments_equal_var_mean(shape):
    from mmnorm_plugin.norms.functional import batch_moments
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
