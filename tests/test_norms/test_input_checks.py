"""The input checks every norm runs before any state changes (input_checks)."""
import pytest
import torch
from torch import nn

from mmnorm_plugin.norms.input_checks import (check_input_4d, check_input_dtype,
                                              check_values_per_statistic)


def test_check_input_4d_names_the_layer_and_shape():
    layer = nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match=r'BatchNorm2d expects a 4-D NCHW input, got shape \(2, 4\)'):
        check_input_4d(layer, torch.zeros(2, 4))
    with pytest.raises(ValueError, match='got an input with 3 channels'):
        check_input_4d(layer, torch.zeros(1, 3, 2, 2))


def test_input_checks_dtype_and_values_per_statistic():
    check_input_dtype(torch.zeros(1, dtype=torch.bfloat16), torch.float32, 'L')  # autocast
    check_input_dtype(torch.zeros(1, dtype=torch.float64), torch.float64, 'L')
    with pytest.raises(ValueError, match='L holds its statistics in torch.float32'):
        check_input_dtype(torch.zeros(1, dtype=torch.float64), torch.float32, 'L')
    with pytest.raises(ValueError, match='L holds its statistics in torch.float16'):
        check_input_dtype(torch.zeros(1, dtype=torch.bfloat16), torch.float16, 'L')
    check_values_per_statistic(2, 'L', [2, 1, 1, 1])
    with pytest.raises(ValueError, match=r'input size \(1, 4, 1, 1\)'):
        check_values_per_statistic(1, 'L', [1, 4, 1, 1])
