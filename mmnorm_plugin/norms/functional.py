"""The small functional core shared by every norm in this package.

Everything here is stateless: modules own their buffers and call these helpers, so the
mechanics that several methods share (applying a normalization with statistics that carry
gradients, EMA updates of running statistics in PyTorch's
convention, finding the convolution that produced an activation) exist exactly once.
"""
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    'ConvOrigin', 'find_producing_conv', 'producing_conv', 'tap_convolutions',
    'convolutions_tapped',
    'normalize_with_stats', 'update_running_stats', 'write_state',
    'check_input_4d', 'check_nchw', 'check_input_dtype', 'check_input_state',
    'check_values_per_statistic', 'GuardedNormMixin', 'warn_once', 'batch_moments',
    'state_value_problems', 'FINITE', 'VARIANCE', 'COUNT', 'MASK', 'end_iteration',
    'listen_for_iteration_end', 'sync_world_size',
    'all_reduce_moments', 'all_reduce_sum', 'convert_norm', 'synced_variant_of',
    'training_sync_group'
]


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


def normalize_with_stats(x: Tensor, mean: Optional[Tensor], var: Tensor,
                         weight: Optional[Tensor], bias: Optional[Tensor],
                         eps: float, eps_outside_sqrt: bool = False) -> Tensor:
    """y = weight * (x - mean) / sqrt(var + eps) + bias, per channel of an NCHW tensor.

    Unlike ``F.batch_norm(training=False)`` the statistics may carry gradients (native
    batch norm refuses gradients w.r.t. its running statistics). The op is folded into one
    per-channel scale and shift so that only one full-size tensor is written.

    Args:
        mean: per-channel mean, or None for no centering (MABN).
        eps_outside_sqrt: use ``sqrt(var) + eps`` (the official CBN code's form).
    """
    std = var.sqrt() + eps if eps_outside_sqrt else (var + eps).sqrt()
    scale = std.reciprocal()
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale if mean is not None else torch.zeros_like(scale)
    if bias is not None:
        shift = shift + bias
    scale = scale.to(x.dtype).view(1, -1, 1, 1)
    shift = shift.to(x.dtype).view(1, -1, 1, 1)
    return torch.addcmul(shift, x, scale)


def write_state(module: torch.nn.Module, name: str, value: Tensor, index=None) -> None:
    """``module.<name>[index] = value`` (the whole tensor when ``index`` is None): the one way
    the layers update persistent state in a training forward.

    Eager: in place, so the tensor keeps its identity (DDP, EMA wrappers and optimizers hold
    references to buffers) and a window write costs one slot. Under ``torch.compile``: out of
    place, and the new tensor replaces the old one. AOTAutograd (torch 2.13) may compute a value
    saved for backward in the backward graph, from a tensor the forward mutated in place, i.e.
    after the mutation (pytorch/pytorch PR 197039, open): CBN's window statistics and MABN's
    renormalization factor then silently came out of the *updated* state. A replaced tensor
    leaves the old value intact for it. Both give the same values.
    """
    tensor = getattr(module, name)
    if not torch.compiler.is_compiling():
        if index is None:
            tensor.copy_(value)
        else:
            tensor[index] = value
        return
    if index is None:
        new = value.to(tensor.dtype).expand(tensor.shape)
    else:
        new = tensor.clone()
        new[index] = value
    setattr(module, name, new)


@torch.no_grad()
def update_running_stats(module: torch.nn.Module, name: str, value: Tensor,
                         momentum: Optional[float],
                         num_batches_tracked: Union[int, Tensor, None]) -> Tensor:
    """EMA of the buffer ``module.<name>`` in PyTorch's convention:
    running <- (1 - m) * running + m * value (written with :func:`write_state`).

    ``momentum=None`` means a cumulative average (m = 1 / num_batches_tracked), as in
    ``torch.nn.BatchNorm2d``; the caller increments ``num_batches_tracked`` first. It may be
    the buffer (the weight 1/n is then computed on the device: no sync, and no graph break
    under ``torch.compile``) or a Python int.

    Entries whose new value is not finite (a NaN/Inf batch, e.g. an fp16 overflow) keep their
    old value: one bad batch never enters the running statistics (``nn.BatchNorm2d``'s stay
    NaN for good). The choice is a tensor select, not a Python branch: no device sync.

    Returns:
        The boolean per-entry mask of the values that were taken.
    """
    running = getattr(module, name)
    if momentum is None:
        if isinstance(num_batches_tracked, Tensor):
            momentum = num_batches_tracked.to(running.dtype).reciprocal()
        else:
            momentum = 1.0 / num_batches_tracked
    value = value.to(running.dtype)
    finite = torch.isfinite(value)
    write_state(module, name, torch.where(finite, running.lerp(value, momentum), running))
    return finite


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


_warned = set()


def warn_once(key: str, message: str) -> None:
    """Warn through mmengine's logger (and ``warnings``) once per ``key`` per process.

    Callers put into ``key`` what the warning is about *and the values that differ* (e.g. both
    window sizes of a checkpoint mismatch), so each distinct case is reported once, however
    many layers share it, and a different case of the same kind is reported again.
    """
    if key in _warned:
        return
    _warned.add(key)
    try:
        from mmengine.logging import print_log
        import logging
        print_log(message, logger='current', level=logging.WARNING)
    except ImportError:  # pragma: no cover - mmengine is a hard dependency
        pass
    warnings.warn(message, stacklevel=3)


# ------------------------------------------------------------------ state value rules
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


class GuardedNormMixin:
    """State mechanics shared by the package's ``_BatchNorm`` subclasses.

    Mix in first (``class MABN(GuardedNormMixin, _BatchNorm)``) and call
    :meth:`_init_guard` at the end of ``__init__``. It provides:

    * **Validate-before-mutate loading**, the one mechanism every norm (and synced variant)
      loads through. ``_load_from_state_dict`` collects this layer's entries (registered
      parameters and buffers, plus the names in ``_extra_state_names``: state kept outside
      buffers, such as CBN's windows, and older layouts' names) and then, before anything is
      copied, checks

      1. the checkpoint's values against ``_state_rules`` (:func:`state_value_problems`:
         integer, non-negative counters; finite statistics; non-negative variances);
      2. the layer's conversion to its own layout (:meth:`_adapt_state`: BGN pools finer
         statistics, MABN and CBN restart a window of another size; it may refuse);
      3. every registered entry's type, dtype kind and shape (:meth:`_expected_shape`), and
         the cross-entry rules of :meth:`_check_state` (CBN: window shapes, pointer ranges);
      4. that no entry is missing (``_optional_state`` names may be) and no key under the
         layer's prefix is unknown.

      Only when everything fits is anything copied (registered entries through torch, then
      :meth:`_load_extra_state`); otherwise the problems go to ``error_msgs`` (torch raises,
      mmengine's non-strict loader logs), missing and unknown keys to ``missing_keys`` /
      ``unexpected_keys``, and the layer is left exactly as it was.

      **Missing keys: a layer loads whole or not at all.** torch (and mmengine) call this
      method with ``strict=True`` whatever the caller passed to ``load_state_dict``, so a layer
      cannot tell a strict load (which must change nothing, then raise) from a non-strict one.
      Loading the entries that are present would break the strict case: torch raises only
      after every module has copied. So a layer lacking any required entry copies nothing and
      reports the entry missing: with ``strict=True`` torch raises and the layer is untouched;
      with ``strict=False`` the load returns the key in ``missing_keys``, as torch does, and
      the layer keeps all of its state, so a checkpoint's ``running_mean`` never sits next to
      the layer's old ``running_var`` (nor a half window). Unknown keys under the layer's
      prefix are treated the same way.
    * **Input checks before any state changes** (:meth:`_check_batch`): dtype and device of
      the input against the layer's state, and one value per statistic in training.
    * **Non-finite bookkeeping.** ``nonfinite_count`` (not persistent) counts training steps
      in which some statistic was skipped because it was not finite; it is incremented on
      the device (no sync) and reported once per class in the log when the layer changes
      mode (``train()``/``eval()``, e.g. around validation) or is saved (checkpoints), both
      off the hot path.
    """

    #: buffers a checkpoint may lack; BN's own counter is one (old checkpoints)
    _optional_state: Tuple[str, ...] = ('num_batches_tracked', )
    #: value rules of the checkpoint's entries (checked as read, before :meth:`_adapt_state`)
    _state_rules: Dict[str, str] = {
        'running_mean': FINITE,
        'running_var': VARIANCE,
        'num_batches_tracked': COUNT,
    }
    #: checkpoint names that belong to the layer besides its parameters and buffers
    _extra_state_names: Tuple[str, ...] = ()

    def _check_batch(self, x: Tensor, values_per_statistic: int) -> None:
        """Refuse, before any state changes, an input of another dtype or device than the
        layer's state and (in training, ``values_per_statistic >= 0``) a batch with one value
        per statistic, as BatchNorm does. Metadata only: no device sync."""
        state = self.weight if self.weight is not None else self.running_mean
        if state is not None:
            check_input_state(x, state, self._layer_name)
        if self.training:
            check_values_per_statistic(values_per_statistic, self._layer_name, list(x.shape))

    def _init_guard(self) -> None:
        # the class name for scriptable input checks (TorchScript cannot read type(self))
        self._layer_name = type(self).__name__
        tensors = [t for t in list(self._parameters.values()) + list(self._buffers.values())
                   if t is not None]
        device = tensors[0].device if tensors else None
        self.register_buffer('nonfinite_count', torch.zeros((), dtype=torch.long,
                                                            device=device), persistent=False)

    # ------------------------------------------------------------------ non-finite report
    def _note_nonfinite(self, finite: Tensor) -> None:
        """Count a step in which some entries of ``finite`` are False (no device sync).

        In place even under ``torch.compile`` (unlike :func:`write_state`): a diagnostic
        counter that no computation reads, which MABN's backward increments too."""
        self.nonfinite_count.add_(finite.logical_not().any())

    def train(self, mode: bool = True):
        self._report_nonfinite()
        return super().train(mode)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self._report_nonfinite()  # checkpointing: off the hot path too
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _report_nonfinite(self) -> None:
        count = getattr(self, 'nonfinite_count', None)
        if count is not None and int(count.item()) > 0:
            warn_once(f'{type(self).__name__}-nonfinite',
                      f'{type(self).__name__}: {int(count.item())} training '
                      f'step(s) produced non-finite statistics (NaN/Inf input or gradient, '
                      f'e.g. an fp16 overflow); the affected channels kept their previous '
                      f'running statistics and windows, so training recovers at the next '
                      f'finite batch. (Reported once per layer type.)')

    # ------------------------------------------------------------------ guarded loading
    def _adapt_state(self, state: Dict[str, Any],
                     notes: List[Tuple[str, str]]) -> Dict[str, Any]:
        """Convert this layer's checkpoint entries (names without prefix) to its layout.

        Must not modify the module. Raise ValueError to refuse the checkpoint (the message
        should name the fix); append ``(key, message)`` to ``notes`` for warnings that are
        logged once per ``key`` if the load goes through (put what differs into ``key``).
        Default: unchanged.
        """
        return state

    def _expected_shape(self, name: str, own: Tensor, value: Tensor) -> Tuple[int, ...]:
        """The shape the checkpoint entry ``value`` for the registered ``name`` must have
        (default: the current one)."""
        return tuple(own.shape)

    def _check_state(self, state: Dict[str, Any], prefix: str) -> List[str]:
        """Problems with the adapted state beyond single registered entries (default: none);
        CBN checks its window here. Each message names the key."""
        return []

    def _load_extra_state(self, state: Dict[str, Any]) -> None:
        """Take the entries of ``_extra_state_names`` from the adapted, validated ``state``
        (called right after the registered entries were copied)."""

    def _after_load(self) -> None:
        """Called after a successful copy (CBN re-reads its Python mirror of num_iters)."""

    def _persistent_entries(self) -> Dict[str, Tensor]:
        own = {n: t for n, t in self._parameters.items() if t is not None}
        own.update((n, t) for n, t in self._buffers.items()
                   if t is not None and n not in self._non_persistent_buffers_set)
        return own

    def _unknown_keys(self, state_dict, prefix: str, names) -> List[str]:
        """Keys under this layer's prefix that are neither its entries nor a child's."""
        unknown = []
        for key in state_dict:
            if not key.startswith(prefix):
                continue
            head, dot, _ = key[len(prefix):].partition('.')
            if (dot and head not in self._modules) or (not dot and head not in names):
                unknown.append(key)
        return unknown

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        own = self._persistent_entries()
        names = list(own) + [n for n in self._extra_state_names if n not in own]
        state = {n: state_dict[prefix + n] for n in names if prefix + n in state_dict}
        version = local_metadata.get('version', None)
        if 'num_batches_tracked' in own and 'num_batches_tracked' not in state and (
                version is None or version < 2):
            # as _NormBase: checkpoints older than the counter keep the current count
            state['num_batches_tracked'] = own['num_batches_tracked'].detach().clone()
        where = f'{prefix[:-1] or type(self).__name__}'
        problems = []
        for name, value in state.items():
            if not isinstance(value, Tensor):
                problems.append(f'{prefix}{name}: expected a Tensor in the checkpoint, got '
                                f'{type(value).__name__}')
            elif name in self._state_rules:
                problems += state_value_problems(prefix + name, value, self._state_rules[name])
        notes: List[Tuple[str, str]] = []
        if not problems:
            try:
                state = self._adapt_state(state, notes)
            except ValueError as err:
                problems.append(f'{where}: {err}')
        if not problems:
            for name, value in state.items():
                if name not in own:
                    continue
                if not isinstance(value, Tensor):
                    problems.append(f'{prefix}{name}: expected a Tensor, got '
                                    f'{type(value).__name__}')
                    continue
                if (value.is_floating_point() != own[name].is_floating_point()
                        or (value.dtype == torch.bool) != (own[name].dtype == torch.bool)):
                    problems.append(f'{prefix}{name}: checkpoint dtype {value.dtype} cannot '
                                    f'hold this layer\'s {own[name].dtype} entry')
                    continue
                expected = self._expected_shape(name, own[name], value)
                got = tuple(value.shape)
                if got != expected and not (expected == () and got == (1, )):
                    problems.append(f'size mismatch for {prefix}{name}: copying a param with '
                                    f'shape {got} from checkpoint, the shape in current model '
                                    f'is {expected}.')
            problems += self._check_state(state, prefix)
        absent = [prefix + n for n in own if n not in state and n not in self._optional_state]
        unknown = self._unknown_keys(state_dict, prefix, names)
        if problems or absent or unknown:
            # refuse: report, copy nothing (see the class docstring for missing keys)
            error_msgs.extend(problems)
            missing_keys.extend(k for k in absent if k not in missing_keys)
            unexpected_keys.extend(k for k in unknown if k not in unexpected_keys)
            return
        registered = {prefix + n: v for n, v in state.items() if n in own}
        super()._load_from_state_dict(registered, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        for name in self._optional_state:
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)
        self._load_extra_state(state)
        self._after_load()
        for key, message in notes:
            warn_once(key, f'{where}: {message}')


# ------------------------------------------------------------------ iteration boundaries
_iteration_listeners: 'weakref.WeakSet' = weakref.WeakSet()
_optimizer_step_hook = None


def listen_for_iteration_end(layer: torch.nn.Module) -> None:
    """Call ``layer._end_iteration()`` at the end of every training iteration (held weakly).

    A training iteration ends at an optimizer step: every ``torch.optim`` optimizer runs the
    global step post-hook registered here on first use (mmengine's ``OptimWrapper``, AMP's
    ``GradScaler`` and gradient accumulation all end in ``optimizer.step()``; a step that AMP
    skips is no boundary). The hook runs outside the model's forward, and in it, a Python flag
    per layer: no device sync, nothing for ``torch.compile`` to trace. Loops that update
    weights without a ``torch.optim`` optimizer call :func:`end_iteration` themselves.
    """
    global _optimizer_step_hook
    if _optimizer_step_hook is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook
        _optimizer_step_hook = register_optimizer_step_post_hook(_after_optimizer_step)
    _iteration_listeners.add(layer)


def end_iteration() -> None:
    """End the current training iteration of every listening layer (CBN: the next training
    call starts a new iteration). Runs after every ``torch.optim`` optimizer step; call it
    directly when the weights are updated by other means."""
    for layer in list(_iteration_listeners):
        layer._end_iteration()


def _after_optimizer_step(optimizer, args, kwargs) -> None:
    end_iteration()


def batch_moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel biased variance and mean of an NCHW tensor over (N, H, W), like
    ``torch.var_mean(x, dim=(0, 2, 3), unbiased=False)`` but in at least float32 and not
    differentiable.

    One native group-norm pass with one group per channel gives the per-(sample, channel)
    moments, pooled over the batch with the parallel-variance formula (exact, no
    E[x²] − E[x]² cancellation). ``var_mean`` over the non-contiguous (0, 2, 3) axes is
    measured 3-9x slower on CPU (e.g. 6.9 vs 0.56 ms at (2, 256, 32, 32), 70 vs 11 ms at
    (512, 256, 7, 7), one thread).
    """
    n, c = x.shape[:2]
    hw = x.numel() // (n * c)
    # eps=0: rstd is exactly 1/sqrt(var) per (sample, channel); a constant slice gives inf,
    # i.e. variance 0
    _, mean_nc, rstd_nc = torch.ops.aten.native_group_norm(x.detach().contiguous(), None, None,
                                                           n, c, hw, c, 0.0)
    dtype = torch.promote_types(mean_nc.dtype, torch.float32)
    mean_nc = mean_nc.to(dtype).view(n, c)
    var_nc = rstd_nc.to(dtype).view(n, c).pow(-2)
    mean = mean_nc.mean(0)
    return var_nc.mean(0) + (mean_nc - mean).pow(2).mean(0), mean


# ------------------------------------------------------------------ cross-rank statistics
def sync_world_size(group=None) -> int:
    """Ranks in ``group`` (default: the world) when a process group exists, else 1.

    The synced layers call this once per training forward to decide whether to communicate:
    outside a process group (or in a group of one) they are their unsynced layer exactly.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def training_sync_group(layer: torch.nn.Module):
    """The process group a synced layer pools its statistics over in this forward, or None
    (per-process statistics): eval mode, no process group, or a group of one rank. The layer's
    ``process_group`` None means the default group (returned as ``dist.group.WORLD``, so that
    None keeps meaning "not synced")."""
    if not layer.training or sync_world_size(layer.process_group) < 2:
        return None
    import torch.distributed as dist
    return layer.process_group if layer.process_group is not None else dist.group.WORLD


def all_reduce_moments(count: Tensor, mean: Tensor, var: Tensor,
                       group=None) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Pool per-rank moments into the moments of the union of every rank's batch.

    Each rank passes its element count ``count`` (shape ``mean.shape[:-1] + (1,)``, 0 for an
    empty batch), mean and biased variance ``(..., C)``; every rank gets back the total count
    and the mean and biased variance of all the ranks' elements together:
    :math:`\mu = \sum_r m_r \mu_r / m`,
    :math:`\sigma^2 = \sum_r m_r(\sigma_r^2 + \mu_r^2) / m - \mu^2`.

    Exactly one ``all_reduce`` (sum) of ``[m_r, m_r\mu_r, m_r(\sigma^2_r + \mu^2_r)]``, i.e.
    ``numel(mean) * 2 + numel(count)`` numbers, in float64: the raw second moment cancels in
    ``E[x^2] - E[x]^2`` at a relative ``1e-16 (\mu/\sigma)^2``, exact for every activation
    float32 can normalize (an ``all_gather`` of per-rank moments, ``nn.SyncBatchNorm``'s choice,
    would avoid the cancellation but moves ``world_size`` times the bytes). An entry whose total
    count is 0 (every rank empty) comes back NaN: callers skip non-finite statistics. A rank's
    non-finite statistics make the pooled ones non-finite, as one NaN in a single batch would.
    Not differentiable (the layers' backward functions reduce their own gradient terms).
    """
    dtype = mean.dtype
    count = count.to(torch.float64)
    present = count > 0
    # an empty rank's moments may be anything (0/0): weight 0 must not turn them into NaN
    mean = torch.where(present, mean.detach().to(torch.float64), 0.0)
    var = torch.where(present, var.detach().to(torch.float64), 0.0)
    packed = torch.cat((count, count * mean, count * (var + mean * mean)), dim=-1)
    all_reduce_sum(packed, group)
    c = mean.shape[-1]
    total, first, second = packed.split((1, c, c), dim=-1)
    mean = first / total
    var = (second / total - mean * mean).clamp_min(0.0)
    return total.to(dtype), mean.to(dtype), var.to(dtype)


def all_reduce_sum(tensor: Tensor, group=None) -> Tensor:
    """In-place sum of ``tensor`` over the ranks of ``group``; returns it. The one collective
    the synced layers issue (kept in one place so that a test can count the calls)."""
    import torch.distributed as dist
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def convert_norm(module: torch.nn.Module, cls: type, expected: type,
                 **overrides) -> torch.nn.Module:
    """``module`` (an ``expected``) as a layer of class ``cls``: a norm and its synced variant.

    The new layer gets ``module``'s hyperparameters (every constructor argument of ``cls``
    that ``module`` holds as an attribute of the same name, then ``overrides``), device,
    dtype and train/eval mode, and holds ``module``'s very parameters and buffers, as
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` does (an optimizer built on ``module`` keeps
    working; replace ``module`` by the result rather than using both). State kept outside
    registered buffers (CBN's windows) is copied through ``load_state_dict``.
    """
    import inspect
    if not isinstance(module, expected):
        raise TypeError(f'{cls.__name__}: expected a {expected.__name__} layer, got '
                        f'{type(module).__name__}')
    skip = ('self', 'device', 'dtype')
    kwargs = {name: getattr(module, name)
              for name, arg in inspect.signature(cls).parameters.items()
              if name not in skip and arg.kind in (arg.POSITIONAL_OR_KEYWORD, arg.KEYWORD_ONLY)
              and hasattr(module, name)}
    kwargs.update(overrides)
    like = next((t for t in list(module.parameters()) + list(module.buffers())
                 if t.is_floating_point()), None)
    factory = {} if like is None else dict(device=like.device, dtype=like.dtype)
    new = cls(**kwargs, **factory)
    new.load_state_dict(module.state_dict())
    for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
        setattr(new, name, tensor)
    return new.train(module.training)


def synced_variant_of(base: type):
    """Class decorator for a synced variant ``cls(base)`` whose ``__init__`` is
    ``(self, num_features, *args, process_group=None, **kwargs)``: its public signature
    (``inspect.signature(cls)``) becomes ``base``'s plus ``process_group``, so the norm-config
    validator checks every argument, :func:`convert_norm` carries every hyperparameter over,
    and the argument list is written once."""
    import inspect

    def decorate(cls):
        signature = inspect.signature(base)
        group = inspect.Parameter('process_group', inspect.Parameter.KEYWORD_ONLY, default=None)
        cls.__signature__ = signature.replace(
            parameters=list(signature.parameters.values()) + [group])
        return cls

    return decorate
