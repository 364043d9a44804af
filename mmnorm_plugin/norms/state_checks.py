"""Rules for the values a norm's checkpoint may hold, checked when a state dict is loaded.

:func:`tensor_problems` checks what a tensor is (layout, device, dtype), :func:`state_value_problems`
what it holds. Both run off the hot path: reading values back is a host sync, fine at load time.
"""
from typing import List

import torch
from torch import Tensor

__all__ = ['FINITE', 'VARIANCE', 'COUNT', 'MASK', 'state_value_problems']

#: floating point, every entry finite (running means, windows)
FINITE = 'finite'
#: floating point, finite and >= 0 (variances, second moments)
VARIANCE = 'variance'
#: an integer dtype and >= 0 (iteration and batch counters, element counts)
COUNT = 'count'
#: bool (validity masks)
MASK = 'mask'


def state_value_problems(key: str, value: Tensor, rule: str) -> List[str]:
    """Why the checkpoint entry ``key`` breaks ``rule`` (empty: it does not).

    Checked when a checkpoint is loaded, never in a training step: reading the values back is
    a host sync, fine there. A counter stored as a float, a negative count or variance, or a
    non-finite statistic would otherwise load silently and fail (or poison the statistics)
    iterations later.
    """
    if rule == MASK:
        if value.dtype != torch.bool:
            return [f'{key}: expected a bool mask, got {value.dtype}']
        return []
    if rule == COUNT:
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            return [f'{key}: a counter must have an integer dtype, got {value.dtype}']
        if value.numel() and bool((value < 0).any()):
            return [f'{key}: a counter must be >= 0, got {value.min().item()}']
        return []
    if not value.is_floating_point():
        return [f'{key}: expected floating point statistics, got {value.dtype}']
    if not bool(torch.isfinite(value).all()):
        return [f'{key}: holds non-finite values (NaN/Inf); the layer never saves such '
                'statistics, so the file is corrupt or was not written by this layer']
    if rule == VARIANCE and value.numel() and bool((value < 0).any()):
        return [f'{key}: a variance (second moment) must be >= 0, got {value.min().item()}']
    return []
