"""The convolution that produced a norm's input: read from autograd, or from conv taps.

CBN compensates the producing conv's weight changes and BKN propagates its prior through that
conv; both are plain ``norm_cfg`` drop-ins called as ``norm(conv(x))``, so they find the conv
from the input. Eager mode reads the autograd graph (:func:`find_producing_conv`);
``torch.compile``, which cannot trace ``grad_fn``, reads forward hooks that
:func:`tap_convolutions` puts on a model's convs. The latest tapped call is process-wide state
(one record, overwritten by every tapped conv call).
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['ConvOrigin', 'find_producing_conv', 'producing_conv', 'tap_convolutions',
           'convolutions_tapped']


@dataclass(frozen=True)
class ConvOrigin:
    """The convolution that produced an activation, as recorded by autograd.

    Attributes:
        weight: the weight values the conv actually used (after any AMP cast or
            re-parameterisation such as weight centralization), detached.
        live_weight: the same weight attached to autograd (a gradient w.r.t. it reaches the
            conv's parameters); None when the conv weight receives no gradient (frozen).
        parameter: the trainable leaf ``nn.Parameter`` behind ``weight`` when it can be
            reached through casts only; None when the weight is frozen or derived.
        has_bias: whether the conv adds a bias.
        bias: the trainable leaf behind the bias (through casts), None when there is no bias
            or autograd cannot reach it (frozen).
        input: the conv's input, detached (None when autograd did not save it).
        stride, padding, dilation, groups: the conv's geometry.
    """
    weight: Tensor
    live_weight: Optional[Tensor]
    parameter: Optional[Tensor]
    has_bias: bool
    bias: Optional[Tensor]
    input: Optional[Tensor]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...]
    groups: int


_CAST_NODES = ('ToCopyBackward0', '_ToCopyBackward0', 'ViewBackward0', 'AliasBackward0')


def _leaf_through_casts(fn) -> Optional[Tensor]:
    while fn is not None:
        if type(fn).__name__ == 'AccumulateGrad':
            return fn.variable
        if type(fn).__name__ not in _CAST_NODES or len(fn.next_functions) != 1:
            return None
        fn = fn.next_functions[0][0]
    return None


def find_producing_conv(x: Tensor) -> Optional[ConvOrigin]:
    """Return the 2-D convolution whose output is ``x``, found through ``x.grad_fn``.

    This is how layers that need the producing conv (CBN's weight compensation, BKN's prior
    propagation) work as plain ``norm_cfg`` drop-ins: mmcv's ``ConvModule``, mmdet's ResNet
    blocks and heads call ``norm(conv(x))`` and never pass the conv. Returns None when
    ``x`` has no autograd history (no trainable parameter upstream, or ``no_grad``) or its
    last op is not a convolution (e.g. a pooling or an addition came in between).
    """
    fn = x.grad_fn
    if fn is None or type(fn).__name__ != 'ConvolutionBackward0':
        return None
    if fn._saved_transposed:
        return None
    weight = fn._saved_weight
    parameter = _leaf_through_casts(fn.next_functions[1][0])
    if weight is None:  # only saved when the input needs a gradient
        if parameter is None:
            return None
        weight = parameter
    if weight.dim() != 4:
        return None
    saved_input = fn._saved_input
    bias_sizes = fn._saved_bias_sym_sizes_opt
    has_bias = bias_sizes is not None and len(bias_sizes) > 0 and bias_sizes[0] != 0
    trainable = fn.next_functions[1][0] is not None
    return ConvOrigin(
        weight=weight.detach(),
        live_weight=weight if trainable else None,
        parameter=parameter,
        has_bias=has_bias,
        bias=_leaf_through_casts(fn.next_functions[2][0]) if has_bias else None,
        input=None if saved_input is None else saved_input.detach(),
        stride=tuple(fn._saved_stride),
        padding=tuple(fn._saved_padding),
        dilation=tuple(fn._saved_dilation),
        groups=int(fn._saved_groups))


class _ConvTap:
    """The latest call of a tapped convolution (see :func:`tap_convolutions`)."""

    def __init__(self) -> None:
        self.module: Optional[torch.nn.Conv2d] = None
        self.input: Optional[Tensor] = None
        self.output: Optional[Tensor] = None
        self.tapped = 0  # convolutions tapped in this process


_conv_tap = _ConvTap()


def _record_conv(module: torch.nn.Module, args, output: Tensor) -> None:
    _conv_tap.module, _conv_tap.input, _conv_tap.output = module, args[0], output


def tap_convolutions(model: torch.nn.Module) -> int:
    """Record every ``nn.Conv2d`` call of ``model`` (a forward hook per conv), so that the
    norms find the conv that produced their input without reading the autograd graph.

    Needed for ``torch.compile``, which cannot trace ``grad_fn`` (CBN's compensation, BKN's
    prior); in eager mode the tapped and the autograd lookups give the same conv and values,
    so a tapped model trains identically compiled or not. A hook is a Python call per conv,
    inlined by ``torch.compile``. Taps convs with the plain ``nn.Conv2d`` forward, zero padding
    and numeric padding (others, e.g. :class:`CenConv2d`, are found through autograd in eager
    mode only). Idempotent; returns the number of convs newly tapped.
    """
    count = 0
    for module in model.modules():
        if (isinstance(module, torch.nn.Conv2d) and type(module).forward is torch.nn.Conv2d.forward
                and module.padding_mode == 'zeros' and not isinstance(module.padding, str)
                and not getattr(module, '_mmnorm_tapped', False)):
            module.register_forward_hook(_record_conv)
            module._mmnorm_tapped = True
            count += 1
    _conv_tap.tapped += count
    return count


def convolutions_tapped() -> bool:
    """Whether :func:`tap_convolutions` tapped any conv in this process."""
    return _conv_tap.tapped > 0


def producing_conv(x: Tensor) -> Optional[ConvOrigin]:
    """The 2-D convolution whose output is ``x`` (None if none, or not known).

    A conv tapped by :func:`tap_convolutions` that produced ``x`` in its latest call is read
    from the tap (traceable by ``torch.compile``); otherwise, in eager mode, from the autograd
    graph (:func:`find_producing_conv`). Both give the weight and input as the conv used them
    (AMP casts included) and None without autograd history.
    """
    tap = _conv_tap
    if tap.output is x:
        return _tapped_origin(tap.module, tap.input, x)
    if torch.compiler.is_compiling():
        return None
    return find_producing_conv(x)


def _tapped_origin(conv: torch.nn.Conv2d, z: Tensor, x: Tensor) -> Optional[ConvOrigin]:
    if not (torch.is_grad_enabled() and x.requires_grad):
        return None  # as find_producing_conv: no autograd history, nothing to differentiate
    weight, bias = conv.weight, conv.bias
    device = x.device.type
    if torch.is_autocast_enabled(device):  # what autocast's conv did to its operands
        cast = torch.get_autocast_dtype(device)
        weight, z = weight.to(cast), z.to(cast)
    trainable = conv.weight.requires_grad
    return ConvOrigin(
        weight=weight.detach(),
        live_weight=weight if trainable else None,
        parameter=conv.weight if trainable else None,
        has_bias=bias is not None,
        bias=bias if bias is not None and bias.requires_grad else None,
        input=z.detach(),
        stride=tuple(conv.stride),
        padding=tuple(conv.padding),
        dilation=tuple(conv.dilation),
        groups=int(conv.groups))
