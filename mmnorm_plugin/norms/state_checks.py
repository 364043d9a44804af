"""What a norm's checkpoint entry may be and hold, checked when a state dict is loaded.

:func:`tensor_problems` checks what an entry is (a dense tensor with values, of a dtype a layer
holds), :func:`state_value_problems` what it holds (the rules below). Both run at load time,
never in a training step: reading values back is a host sync, fine there.
"""
from typing import Any, List

import torch
from torch import Tensor

__all__ = ['FINITE', 'VARIANCE', 'COUNT', 'MASK', 'tensor_problems', 'state_value_problems']

#: floating point, every entry finite (parameters, running means, windows)
FINITE = 'finite'
#: floating point, finite and >= 0 (variances, second moments)
VARIANCE = 'variance'
#: an integer dtype and >= 0 (iteration and batch counters, element counts)
COUNT = 'count'
#: bool (validity masks)
MASK = 'mask'

#: the dtypes a layer's entries have (floating point state, integer counters, bool masks) or a
#: checkpoint may hold for them; anything else (complex, quantized, float8, uint16-64) is refused
_ENTRY_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8,
                 torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def tensor_problems(key: str, value: Any) -> List[str]:
    """Why ``value`` cannot be the checkpoint entry ``key`` whatever it holds (empty: it can).

    An entry must be a dense tensor with values: a sparse or otherwise non-strided layout
    (torch's copy would densify it, or fail half way through a load), a nested tensor and a
    meta-device tensor (shape only, no values: the copy fails after other entries were
    copied) are refused, and so is a dtype none of the layers holds. Metadata only.
    """
    if not isinstance(value, Tensor):
        return [f'{key}: expected a Tensor in the checkpoint, got {type(value).__name__}']
    if value.is_nested:
        return [f'{key}: a nested tensor; the layer holds dense tensors only']
    if value.layout != torch.strided:
        return [f'{key}: a {value.layout} tensor (sparse or another layout); the layer holds '
                f'dense (torch.strided) tensors only']
    if value.device.type == 'meta':
        return [f'{key}: a meta-device tensor holds no values (the checkpoint was saved from a '
                f'model that was never materialized)']
    if value.dtype not in _ENTRY_DTYPES:
        return [f'{key}: dtype {value.dtype} is not one a norm holds (floating point state, '
                f'integer counters, bool masks)']
    return []


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
        return [f'{key}: expected floating point values, got {value.dtype}']
    if not bool(torch.isfinite(value).all()):
        return [f'{key}: holds non-finite values (NaN/Inf); the layer never saves non-finite '
                'statistics, so the run had diverged or the file is corrupt']
    if rule == VARIANCE and value.numel() and bool((value < 0).any()):
        return [f'{key}: a variance (second moment) must be >= 0, got {value.min().item()}']
    return []
