"""Finding the convolution that produced a norm's input (conv_origin)."""
import pytest
import torch
from torch import nn

from mmnorm_plugin.norms.conv_origin import find_producing_conv


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
