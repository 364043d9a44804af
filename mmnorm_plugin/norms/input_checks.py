"""Checks of a norm's input, run before any state changes (metadata only: no device sync).

``check_nchw`` is scriptable (TorchScript compiles the layers' eval-mode forward); the others
run in Python only.
"""
from typing import Any, List

import torch
from torch import Tensor

__all__ = ['check_nchw', 'check_input_4d', 'check_input_dtype', 'check_input_state',
           'check_values_per_statistic']


def _shape_repr(shape: List[int]) -> str:
    """``str(tuple(shape))`` in a form TorchScript compiles."""
    if len(shape) == 1:
        return '(' + str(shape[0]) + ',)'
    return '(' + ', '.join([str(s) for s in shape]) + ')'


def check_nchw(x: Tensor, num_features: int, name: str) -> None:
    """Raise a ValueError naming the layer if ``x`` is not NCHW with ``num_features`` channels
    (``num_features < 0``: any). Scriptable, for the layers' eval-mode ``torch.jit.script``."""
    if x.dim() != 4:
        raise ValueError(f'{name} expects a 4-D NCHW input, got shape {_shape_repr(x.shape)}')
    if num_features >= 0 and x.shape[1] != num_features:
        raise ValueError(f'{name}({num_features}) got an input with {x.shape[1]} channels '
                         f'(shape {_shape_repr(x.shape)})')


def check_input_4d(layer: Any, x: Tensor) -> None:
    """:func:`check_nchw` with the name and channel count read from ``layer`` (Python only)."""
    num_features = getattr(layer, 'num_features', None)
    check_nchw(x, -1 if num_features is None else int(num_features), type(layer).__name__)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_input_dtype(x: Tensor, state_dtype: torch.dtype, name: str) -> None:
    """Refuse an input whose precision the layer's statistics cannot hold.

    Allowed: the state's own dtype, and a float16/bfloat16 input into float32 state (autocast:
    statistics are accumulated in float32). A float64 input into a float32 layer would
    otherwise be normalized with float32 statistics silently; ``nn.BatchNorm2d`` refuses it
    too (``mixed dtype (CPU): all inputs must share same datatype``).
    """
    if x.dtype == state_dtype or (x.dtype in _LOW_PRECISION and state_dtype == torch.float32):
        return
    raise ValueError(f'{name} holds its statistics in {state_dtype} but got a {x.dtype} '
                     f'input; convert the layer (`.to({x.dtype})`) or the input '
                     f'(`.to({state_dtype})`)')


def check_input_state(x: Tensor, state: Tensor, name: str) -> None:
    """Refuse an input the layer's state ``state`` cannot be updated from: another precision
    (:func:`check_input_dtype`) or another device. Both are tensor metadata (no device sync);
    the layers call this before any state changes, so a refused input leaves them untouched
    (torch itself would fail only at the first mixed op, after counters had moved)."""
    check_input_dtype(x, state.dtype, name)
    if x.device != state.device:
        raise ValueError(f'{name} holds its state on {state.device} but got an input on '
                         f'{x.device}; move the layer (`.to({str(x.device)!r})`) or the input')


def check_values_per_statistic(count: int, name: str, shape: List[int]) -> None:
    """Raise like ``nn.BatchNorm2d`` when a training statistic would be computed from one value.

    With a single value the centred input is exactly 0: the output is the bias with a zero
    gradient and the running variance is pulled toward 0. ``count`` is a Python int from the
    input's shape (no device sync).
    """
    if count == 1:
        raise ValueError(f'{name}: expected more than 1 value per statistic when training, got '
                         f'input size {_shape_repr(shape)} (a batch of one 1x1 map or a single '
                         f'RoI); use a larger batch, or eval mode / frozen statistics there')
