"""The base of every norm of this package, and the one way a training step writes state.

:class:`NormBase` is to the plugin norms what torch's ``_NormBase`` is to BatchNorm: BN's
parameters, buffers and names, plus the mechanics every method shares, written once
(transactional state loading with version upgrades, the running-statistics update, non-finite
bookkeeping, input checks, the eval-mode statistics that fold into a BN). :func:`write_state`
and :func:`update_running_stats` are how a training forward writes persistent state (in place
eagerly, replaced under ``torch.compile``).
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .input_checks import check_input_state, check_values_per_statistic
from .reporting import warn_once
from .state_checks import COUNT, FINITE, VARIANCE, state_value_problems, tensor_problems

__all__ = ['NormBase', 'write_state', 'update_running_stats']


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


class NormBase(_BatchNorm):
    r"""Base class of every norm of this package (CBN, MABN, BGN, BKN and the synced variants).

    A ``_BatchNorm`` with BN's parameter and buffer names (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``) and ``_abbr_ = 'bn'``, so that
    mmdet's ``norm_eval``, mmengine's ``norm_decay_mult``, ``is_norm`` and BN checkpoints treat
    a plugin norm as BN. A subclass builds its own state in ``__init__`` and calls
    :meth:`_finish_init` last; it writes its equations, and this class owns what they share:

    * **Transactional loading.** ``_load_from_state_dict`` collects the layer's entries
      (registered parameters and persistent buffers, plus the names in
      ``_extra_state_names``: state kept outside buffers, such as CBN's window, and older
      layouts' names) and, before anything changes, validates them:

      1. the version in the state dict's metadata, and what each entry is
         (:func:`~.state_checks.tensor_problems`: a dense tensor with values, of a dtype a
         layer holds; a meta-device, sparse or complex entry is refused);
      2. the values against ``_state_rules`` (:func:`~.state_checks.state_value_problems`:
         finite parameters and statistics, integer non-negative counters, variances
         ``>= 0``);
      3. the upgrade of an older layout (:meth:`_upgrade_state`, keyed on ``_version``) and
         the conversion to this layer's layout (:meth:`_adapt_state`: BGN pools finer
         statistics, MABN and CBN restart a window of another size; either may refuse);
      4. every registered entry's dtype kind and shape, and the cross-entry rules of
         :meth:`_check_state` (CBN: window shapes and ring pointers);
      5. the values as this layer will hold them: every entry is cast to the layer's dtype
         (:meth:`_stage_extra_state` for state outside buffers) and must still be finite (a
         float64 ``1e300`` is ``inf`` in float32);
      6. that no required entry is missing (``_optional_state`` names may be) and no key under
         the layer's prefix is unknown.

      Only then is anything written: the cast entries through torch (in place, so optimizers
      and wrappers keep their references), then :meth:`_load_extra_state` and
      :meth:`_after_load` (Python mirrors). Should torch's copy still fail, the parameters
      and buffers are put back as they were. A refused load reports one line per problem,
      naming the key, in ``error_msgs`` (torch raises, mmengine's non-strict loader logs),
      and leaves the layer bit-identical: parameters, buffers, state outside buffers and
      Python mirrors.

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
    * **The running-statistics update** (:meth:`_update_running_stats`): count the batch, an
      EMA of the mean and of the unbiased variance in PyTorch's momentum convention
      (``momentum=None``: a cumulative average), and non-finite entries skipped.
    * **Non-finite bookkeeping.** ``nonfinite_count`` (not persistent) counts training steps
      in which some statistic was skipped because it was not finite; it is incremented on
      the device (no sync) and reported once per class in the log when the layer changes
      mode (``train()``/``eval()``, e.g. around validation) or is saved, both off the hot path.
    * **Input checks before any state changes** (:meth:`_check_batch`): dtype and device of
      the input against the layer's state, and more than one value per statistic in training.
    * **Eval-mode folding** (:meth:`eval_statistics`): in eval mode every plugin norm is
      ``F.batch_norm`` with per-channel statistics, so it folds into a BN and then into its
      conv (:mod:`mmnorm_plugin.deploy.convert`).
    """
    _abbr_ = 'bn'
    #: buffers a checkpoint may lack; BN's own counter is one (old checkpoints)
    _optional_state: Tuple[str, ...] = ('num_batches_tracked', )
    #: value rules of the checkpoint's entries (checked as read, before the upgrade)
    _state_rules: Dict[str, str] = {
        'weight': FINITE,
        'bias': FINITE,
        'running_mean': FINITE,
        'running_var': VARIANCE,
        'num_batches_tracked': COUNT,
    }
    #: checkpoint names that belong to the layer besides its parameters and buffers
    _extra_state_names: Tuple[str, ...] = ()

    def _finish_init(self) -> None:
        """Call at the end of a subclass's ``__init__``, after its own buffers."""
        # the class name for scriptable input checks (TorchScript cannot read type(self))
        self._layer_name = type(self).__name__
        tensors = [t for t in list(self._parameters.values()) + list(self._buffers.values())
                   if t is not None]
        device = tensors[0].device if tensors else None
        self.register_buffer('nonfinite_count', torch.zeros((), dtype=torch.long,
                                                            device=device), persistent=False)

    def _check_batch(self, x: Tensor, values_per_statistic: int) -> None:
        """Refuse, before any state changes, an input of another dtype or device than the
        layer's state and (in training, ``values_per_statistic >= 0``) a batch with one value
        per statistic, as BatchNorm does. Metadata only: no device sync."""
        state = self.weight if self.weight is not None else self.running_mean
        if state is not None:
            check_input_state(x, state, self._layer_name)
        if self.training:
            check_values_per_statistic(values_per_statistic, self._layer_name, list(x.shape))

    # ------------------------------------------------------------------ running statistics
    def _count_batch(self, present: Optional[Tensor] = None) -> None:
        """``num_batches_tracked += 1``; a synced layer passes ``present`` (a bool tensor:
        whether any rank had an element), so that a step in which every rank was empty counts
        no batch without reading the count back to the host."""
        step = 1 if present is None else present.to(self.num_batches_tracked.dtype)
        write_state(self, 'num_batches_tracked', self.num_batches_tracked + step)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var_unbiased: Tensor,
                              present: Optional[Tensor] = None) -> None:
        """BN's running-statistics update: count the batch (:meth:`_count_batch`), then
        ``running <- (1 - momentum) running + momentum value`` for the mean and the unbiased
        variance (``momentum=None``: 1/num_batches_tracked, on the device), skipping non-finite
        entries (:func:`update_running_stats`) and counting the step if any was skipped. A step
        with ``present`` False (every rank empty, so the pooled statistics are NaN and nothing
        is taken) counts no batch and is not a non-finite one.
        """
        self._count_batch(present)
        t = self.num_batches_tracked
        finite = update_running_stats(self, 'running_mean', mean, self.momentum, t)
        finite &= update_running_stats(self, 'running_var', var_unbiased, self.momentum, t)
        if present is not None:
            finite |= ~present
        self._note_nonfinite(finite)

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

    # ------------------------------------------------------------------ eval-mode folding
    def eval_statistics(self) -> Tuple[Tensor, Tensor]:
        """Per-channel ``(mean, var)`` with which this layer's eval forward is
        ``F.batch_norm(x, mean, var, weight, bias, eps=self.eps)``: the BN it folds into.

        Default: the running statistics. Raises ValueError without them (eval mode then
        normalizes with the test batch's statistics: no fixed affine).
        """
        if self.running_mean is None:
            raise ValueError(
                f'{type(self).__name__}(track_running_stats=False) normalizes with the '
                'statistics of the test batch in eval mode: not a fixed affine, cannot be '
                'converted to an inference BN')
        return self.running_mean, self.running_var

    # ------------------------------------------------------------------ loading: hooks
    def _upgrade_state(self, state: Dict[str, Any], version: Optional[int],
                       notes: List[Tuple[str, str]]) -> Dict[str, Any]:
        """Bring the entries (names without prefix) of a checkpoint saved by an older
        ``_version`` of this layer to the current layout. ``version`` is None for a state dict
        without version metadata (also the oldest, as torch reads it). Must not modify the
        module; may raise ValueError to refuse; ``notes`` as in :meth:`_adapt_state`.

        BN's counter came with version 2: an older checkpoint keeps the layer's current count
        (as ``_NormBase`` does).
        """
        own = self._buffers.get('num_batches_tracked')
        if own is not None and 'num_batches_tracked' not in state and (version is None
                                                                      or version < 2):
            state['num_batches_tracked'] = own.detach().clone()
        return state

    def _adapt_state(self, state: Dict[str, Any],
                     notes: List[Tuple[str, str]]) -> Dict[str, Any]:
        """Convert this layer's checkpoint entries (names without prefix) to its layout.

        Must not modify the module. Raise ValueError to refuse the checkpoint (the message
        should name the fix); append ``(key, message)`` to ``notes`` for warnings that are
        logged once per ``key`` if the load goes through (put what differs into ``key``).
        Default: unchanged.
        """
        return state

    def _check_state(self, state: Dict[str, Any], prefix: str) -> List[str]:
        """Problems with the adapted state beyond single registered entries (default: none);
        CBN checks its window here. Each message names the key."""
        return []

    def _stage_extra_state(self, state: Dict[str, Any]) -> Dict[str, Tensor]:
        """The entries of ``_extra_state_names`` from the adapted, validated ``state``, as the
        layer will hold them (its device and dtypes), without touching the layer. Default:
        none."""
        return {}

    def _load_extra_state(self, staged: Dict[str, Tensor]) -> None:
        """Take the entries :meth:`_stage_extra_state` returned (called right after the
        registered entries were copied; must not fail)."""

    def _after_load(self) -> None:
        """Called after a successful load (CBN re-reads its Python mirror of num_iters)."""

    # ------------------------------------------------------------------ loading: transaction
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

    def _validated_state(self, state: Dict[str, Any], own: Dict[str, Tensor], version,
                         assign: bool, prefix: str, notes: List[Tuple[str, str]]):
        """Steps 1-5 of loading (see the class docstring), touching nothing. Returns
        ``(problems, state, staged, extra)``: the upgraded and adapted ``state``, the
        registered entries to copy and the staged state outside buffers."""
        where = prefix[:-1] or type(self).__name__
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                    or version < 0):
            return [f'{where}: state-dict metadata version {version!r} is not a version '
                    f'number'], state, {}, {}
        problems = []
        for name, value in state.items():
            problems += tensor_problems(prefix + name, value)
        if problems:
            return problems, state, {}, {}
        for name, value in state.items():
            if name in self._state_rules:
                problems += state_value_problems(prefix + name, value, self._state_rules[name])
        if problems:
            return problems, state, {}, {}
        try:
            state = self._upgrade_state(state, version, notes)
            state = self._adapt_state(state, notes)
        except ValueError as err:
            return [f'{where}: {err}'], state, {}, {}
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
            expected, got = tuple(own[name].shape), tuple(value.shape)
            if got != expected and not (expected == () and got == (1, )):
                problems.append(f'size mismatch for {prefix}{name}: copying a param with '
                                f'shape {got} from checkpoint, the shape in current model '
                                f'is {expected}.')
        problems += self._check_state(state, prefix)
        if problems:
            return problems, state, {}, {}
        # the values as the layer will hold them (the cast torch's copy_ makes)
        cast = {n: v.detach().to(dtype=own[n].dtype) for n, v in state.items() if n in own}
        extra = self._stage_extra_state(state)
        for name, value in list(cast.items()) + list(extra.items()):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                problems.append(f'{prefix}{name}: holds values beyond the range of this '
                                f'layer\'s {value.dtype} (they would load as inf)')
        if problems:
            return problems, state, {}, {}
        # load_state_dict(assign=True) takes the checkpoint's tensors themselves, as torch does
        staged = {n: state[n] for n in cast} if assign else cast
        return problems, state, staged, extra

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        own = self._persistent_entries()
        names = list(own) + [n for n in self._extra_state_names if n not in own]
        state = {n: state_dict[prefix + n] for n in names if prefix + n in state_dict}
        notes: List[Tuple[str, str]] = []
        problems, state, staged, extra = self._validated_state(
            state, own, local_metadata.get('version', None),
            bool(local_metadata.get('assign_to_params_buffers', False)), prefix, notes)
        absent = [prefix + n for n in own if n not in state and n not in self._optional_state]
        unknown = self._unknown_keys(state_dict, prefix, names)
        if problems or absent or unknown:
            # refuse: report, copy nothing (see the class docstring for missing keys)
            error_msgs.extend(problems)
            missing_keys.extend(k for k in absent if k not in missing_keys)
            unexpected_keys.extend(k for k in unknown if k not in unexpected_keys)
            return
        if not self._commit_registered(staged, prefix, local_metadata, strict, missing_keys,
                                       unexpected_keys, error_msgs):
            return
        self._load_extra_state(extra)
        self._after_load()
        where = prefix[:-1] or type(self).__name__
        for key, message in notes:
            warn_once(key, f'{where}: {message}')

    def _commit_registered(self, staged: Dict[str, Tensor], prefix, local_metadata, strict,
                           missing_keys, unexpected_keys, error_msgs) -> bool:
        """Copy the validated, cast entries through torch (which keeps each parameter's and
        buffer's identity, or assigns with ``load_state_dict(assign=True)``). Should the copy
        still fail, put every parameter and buffer back as it was; returns whether it
        succeeded."""
        saved = {n: (t, t.detach().clone()) for n, t in self._persistent_entries().items()}
        errors = len(error_msgs)
        try:
            super()._load_from_state_dict({prefix + n: v for n, v in staged.items()}, prefix,
                                          local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)
        except Exception as err:  # noqa: BLE001 - any failure rolls the layer back
            error_msgs.append(f'{prefix[:-1] or type(self).__name__}: {err}')
        for name in self._optional_state:
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)
        if len(error_msgs) == errors:
            return True
        with torch.no_grad():
            for name, (tensor, value) in saved.items():
                registry = self._parameters if name in self._parameters else self._buffers
                registry[name] = tensor
                tensor.copy_(value)
        return False
