"""What every norm of this package shares: its state mechanics.

:class:`GuardedNormMixin` loads a checkpoint validate-then-commit, checks an input before any
state changes and reports non-finite statistics; :func:`write_state` and
:func:`update_running_stats` are the one way a training forward writes persistent state.
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .input_checks import check_input_state, check_values_per_statistic
from .reporting import warn_once
from .state_checks import COUNT, FINITE, VARIANCE, state_value_problems

__all__ = ['GuardedNormMixin', 'write_state', 'update_running_stats']


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
