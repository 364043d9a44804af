"""CBN's cross-iteration window: a ring buffer of past batches' statistics, per call site.

The window holds, for each call site ``s`` of an iteration (``S`` sites) and each of the last
``k = buffer_num`` iterations, a batch's per-channel statistics, the derivatives of those
statistics with respect to the producing conv's weight, and ``⟨derivative, weight⟩`` at the
time (so that moving a past entry to the current weights costs one inner product). A ring
pointer and a fill level per site say where the next entry goes. :class:`CrossIterationWindow`
owns all of it: its layout, writing an entry, compensating past entries, the window statistics,
and saving, upgrading, checking and loading it; :class:`~mmnorm_plugin.norms.cbn.CBN` decides
when (call sites, iterations, burn-in) and normalizes.
"""
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn.grad import conv2d_weight

from .base import write_state
from .conv_origin import ConvOrigin
from .reporting import warn_once
from .state_checks import COUNT, FINITE, MASK, VARIANCE, state_value_problems

__all__ = ['CrossIterationWindow']

# The window, one per call site (S sites): statistics (S, buffer_num, C), the element count of
# each entry (S, buffer_num; what SyncCBN weights ranks by), ring pointers (S,), derivative
# history (S, G | C, buffer_num, P).
_WINDOW_STATS = ('hist_mean', 'hist_var', 'hist_mean_proj', 'hist_var_proj')
# which entries of the window hold a batch's finite statistics, per channel (S, buffer_num, C)
_MASKS = ('hist_valid', )
_COUNTS = ('hist_count', )
_POINTERS = ('hist_len', 'hist_ptr')
_INTEGER = _COUNTS + _POINTERS  # int64: immune to .half() and exact at any count
_LAZY_BUFFERS = ('hist_mean_grad', 'hist_var_grad')
_WINDOW = _WINDOW_STATS + _MASKS + _COUNTS + _POINTERS + _LAZY_BUFFERS
# The layout of version 1 (E[x²] history, derivative rows per iteration); not migratable.
_V1_BUFFERS = ('hist_sqmean', 'hist_sqmean_proj', 'hist_sqmean_grad')


class CrossIterationWindow:
    """The cross-iteration window of :class:`~mmnorm_plugin.norms.cbn.CBN`, mixed into it.

    The window's shape depends on how often the layer is called per iteration and on the
    producing conv, both unknown until training runs, so its tensors are plain attributes of
    the layer (``hist_*``, the names its checkpoint entries have), moved by ``_apply``
    (``.to()``, ``.cuda()``) and saved once they exist, deliberately *not* registered buffers:
    a buffer whose shape changes after construction breaks every wrapper that copies buffers
    before the first step (mmengine's ``EMAHook`` and ``StochasticWeightAverage`` pair buffers
    by order or alias the state dict at construction), and DDP would broadcast rank 0's
    per-rank windows. Kept on the layer rather than in an object of their own because
    ``torch.compile`` replaces state tensors by assigning the layer's attributes
    (:func:`~.base.write_state`).

    **Derivatives, cheaply and exactly.** Output channel ``c`` depends on filter
    ``W[c]`` only, so per channel: ``∂μ_c/∂W[c]`` is the mean input patch, identical for every
    channel of a conv group (``G × C_in/G·kh·kw`` numbers), and ``∂σ²_c/∂W[c] =
    (2/M) Σ (x_c − μ_c) · patch`` is one weight-gradient convolution. The official code runs two
    full ``autograd.grad`` calls instead. Since ``⟨D, W_t − W_{t−τ}⟩ = ⟨D, W_t⟩ − ⟨D, W_{t−τ}⟩``
    and the second term is known at ``t−τ``, a past iteration costs one weight-sized tensor
    plus ``O(C + C_in k²)`` numbers (the official layout keeps three weight-sized tensors).
    For a bias-free conv ``μ`` is linear in ``W`` and its compensation is exact; ``σ²``'s
    error is second order in the step. A conv bias is not compensated (as in the official
    code; mmdet's convs before a norm have none).

    The host class provides ``buffer_num``, ``num_features``, ``rho`` and
    ``grad_through_compensation``. Entries are written at ring slots held in device tensors
    (``hist_ptr``), never read back to the host, so a training step has no device sync and
    nothing ``torch.compile`` specializes on.
    """

    _extra_state_names = _WINDOW + _V1_BUFFERS

    # ------------------------------------------------------------------ layout
    def _empty_window(self, device=None, dtype=None) -> None:
        """No call site seen yet: window tensors with 0 sites, no derivative history."""
        for name, tensor in self._empty_window_tensors(device, dtype).items():
            setattr(self, name, tensor)

    def _empty_window_tensors(self, device=None, dtype=None) -> Dict[str, Tensor]:
        """The tensors of an empty window, on the current window's device and dtype (on
        ``device`` and ``dtype`` before one exists)."""
        like = getattr(self, 'hist_mean', None)
        if like is not None:
            device, dtype = like.device, like.dtype
        k, c = self.buffer_num, self.num_features
        tensors = {}
        for name in _WINDOW_STATS:
            tensors[name] = torch.zeros(0, k, c, device=device, dtype=dtype)
        for name in _MASKS:
            tensors[name] = torch.zeros(0, k, c, device=device, dtype=torch.bool)
        for name in _COUNTS:
            tensors[name] = torch.zeros(0, k, device=device, dtype=torch.long)
        for name in _POINTERS:
            tensors[name] = torch.zeros(0, device=device, dtype=torch.long)
        for name in _LAZY_BUFFERS:
            tensors[name] = torch.zeros(0, device=device, dtype=dtype)
        return tensors

    @property
    def num_sites(self) -> int:
        """Call sites per training iteration (a head shared over 5 FPN levels has 5)."""
        return self.hist_ptr.shape[0]

    def _add_site(self) -> None:
        for name in _WINDOW:
            tensor = getattr(self, name)
            if tensor.dim() > 1 or name in _POINTERS:
                setattr(self, name, torch.cat((tensor, tensor.new_zeros((1, ) +
                                                                      tensor.shape[1:]))))

    def _prepare_history(self, grads: Tuple[Tensor, Tensor]) -> None:
        """Size the derivative history for this conv; restart the windows if the conv changed."""
        d_mean, d_var = grads
        s, k = self.num_sites, self.buffer_num
        shapes = [(s, d_mean.shape[0], k, d_mean.shape[1]), (s, d_var.shape[0], k, d_var.shape[1])]
        current = [tuple(getattr(self, name).shape) for name in _LAZY_BUFFERS]
        if current == shapes:
            return
        if self.hist_var_grad.numel():
            warn_once(
                f'cbn-conv-changed-{current[1]}-{shapes[1]}',
                f'CBN({self.num_features}): the producing conv changed (derivative history '
                f'{current[1]} -> {shapes[1]}); restarting the cross-iteration window.')
            for name in _POINTERS + _COUNTS + _MASKS:
                setattr(self, name, torch.zeros_like(getattr(self, name)))
        for name, shape in zip(_LAZY_BUFFERS, shapes):
            setattr(self, name, self.hist_mean.new_zeros(shape))

    def _apply(self, fn, recurse=True):
        # .to() / .cuda() / .double(): the window moves with the buffers
        super()._apply(fn, recurse)
        for name in _WINDOW:
            setattr(self, name, fn(getattr(self, name)))
        return self

    # ------------------------------------------------------------------ entries and statistics
    def _state_dtype(self) -> torch.dtype:
        return self.hist_mean.dtype

    def _conv_terms(self, x: Tensor, mean: Tensor, origin: Optional[ConvOrigin]):
        """The producing conv's weight (C, P) as used, and this batch's (∂μ/∂W, ∂σ²/∂W).

        Returns ``(None, None)`` when nothing can or needs to be compensated.
        """
        if origin is None:
            if not torch.compiler.is_compiling() and x.grad_fn is not None:
                warn_once(
                    f'cbn-no-conv-{type(x.grad_fn).__name__}',
                    f'CBN({self.num_features}): the input was produced by '
                    f'{type(x.grad_fn).__name__}, not by a Conv2d, so past statistics cannot be '
                    'compensated for weight changes; using the uncompensated cross-iteration '
                    'average for such layers.')
            return None, None
        if origin.live_weight is None or origin.input is None:
            return None, None  # frozen conv weight: nothing to compensate
        dtype = self._state_dtype()
        weight = origin.weight.to(dtype)
        c = weight.shape[0]  # x's channel count, checked by check_input_4d
        return weight.reshape(c, -1), self._stat_grads(x.detach(), mean, origin, dtype)

    @staticmethod
    def _stat_grads(x: Tensor, mean: Tensor, origin: ConvOrigin,
                    dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        z = origin.input.to(dtype)
        n, c, h, w = x.shape
        g = origin.groups
        c_in, kh, kw = origin.weight.shape[1:]
        m = n * h * w
        if m == 0:  # a SyncCBN rank without images: its entries have weight 0
            return (x.new_zeros((g, c_in * kh * kw), dtype=dtype),
                    x.new_zeros((c, c_in * kh * kw), dtype=dtype))
        geometry = (origin.stride, origin.padding, origin.dilation, g)
        # ∂μ_c/∂W[c]: mean patch per group = weight-gradient of a conv with one output channel
        # per group and grad_output 1/M; batch-summed first since grad_output ignores n.
        ones = z.new_full((1, g, h, w), 1.0 / m)
        d_mean = conv2d_weight(z.sum(0, keepdim=True), (g, c_in, kh, kw), ones, *geometry)
        # ∂σ²_c/∂W[c] = (2/M) Σ (x_c − μ_c) · patch = (2/M) Σ x_c · patch − 2 μ_c ∂μ_c/∂W[c]:
        # one weight-gradient conv on x itself (centring x would cost a pass over it). The
        # subtraction loses ~ε·|μ|/σ relative precision in this first-order term only; the
        # statistics themselves never subtract O(μ²) quantities.
        d_var = conv2d_weight(z, (c, c_in, kh, kw), x.to(dtype), *geometry).reshape(c, -1)
        d_mean = d_mean.reshape(g, -1)
        d_var = d_var.mul_(2.0 / m).view(g, c // g, -1).sub_(
            2 * mean.view(g, c // g, 1) * d_mean.unsqueeze(1)).view(c, -1)
        # a non-finite batch must not poison later windows through its derivatives
        return (torch.nan_to_num(d_mean, 0.0, 0.0, 0.0), torch.nan_to_num(d_var, 0.0, 0.0, 0.0))

    @torch.no_grad()
    def _push(self, site: int, mean: Tensor, var: Tensor, count: int, weight: Optional[Tensor],
              grads: Optional[Tuple[Tensor, Tensor]]) -> None:
        """Write this batch's entry at the site's ring pointer and advance the ring.

        The slot is a device tensor (``hist_ptr``) used as an index (:func:`write_state`): no
        host read, nothing ``torch.compile`` specializes on. A channel whose statistics are not
        finite is stored as zeros with its validity bit cleared, so the window (and any
        checkpoint of it) only ever holds finite numbers.
        """
        slot = self.hist_ptr[site:site + 1]
        at = (slot.new_full((1, ), site), slot)  # [site, slot] of a (S, k, ...) entry
        finite = torch.isfinite(mean) & torch.isfinite(var) & (var >= 0)
        zero = mean.new_zeros(())

        def put(name: str, value: Tensor) -> None:
            # (autocast computes the projections in bfloat16)
            write_state(self, name, value.unsqueeze(0).to(getattr(self, name).dtype), at)

        put('hist_mean', torch.where(finite, mean, zero))
        put('hist_var', torch.where(finite, var, zero))
        put('hist_valid', finite)
        put('hist_count', self.hist_count.new_full((), count))
        if grads is not None:
            d_mean, d_var = grads
            # the derivative history is (S, G | C, k, P): the slot is its third index
            derivative_at = (at[0], slice(None), slot)
            write_state(self, 'hist_mean_grad', d_mean.unsqueeze(0), derivative_at)
            write_state(self, 'hist_var_grad', d_var.unsqueeze(0), derivative_at)
            # the same product as the later ⟨D, W_t⟩, so unchanged weights compensate by 0 up to
            # float rounding (the later one runs over all k slots, a different BLAS kernel:
            # docs/cbn_trajectory.md)
            c, p = weight.shape
            g = d_mean.shape[0]
            mean_proj = torch.bmm(weight.reshape(g, c // g, p),
                                  d_mean.reshape(g, p, 1)).reshape(c)
            var_proj = torch.bmm(d_var.reshape(c, 1, p), weight.reshape(c, p, 1)).reshape(c)
        else:
            # no conv to compensate this time: a zero derivative keeps the entry as measured
            if self.hist_var_grad.numel():
                derivative_at = (at[0], slice(None), slot)
                for name in _LAZY_BUFFERS:
                    write_state(self, name, zero, derivative_at)
            mean_proj = var_proj = zero.expand_as(mean)
        put('hist_mean_proj', torch.where(finite, mean_proj, zero))
        put('hist_var_proj', torch.where(finite, var_proj, zero))
        k = self.buffer_num
        write_state(self, 'hist_len', (self.hist_len[site:site + 1] + 1).clamp_max(k), at[:1])
        write_state(self, 'hist_ptr', (slot + 1) % k, at[:1])

    def _projections(self, weight: Tensor, site: int) -> Tuple[Tensor, Tensor]:
        """⟨∂μ_τ/∂W[c], W[c]⟩ and ⟨∂σ²_τ/∂W[c], W[c]⟩ for every window slot: (k, C)."""
        d_mean = self.hist_mean_grad[site]  # (G, k, P)
        d_var = self.hist_var_grad[site]  # (C, k, P)
        c, p = weight.shape
        g, k = d_mean.shape[:2]
        mean_proj = torch.bmm(weight.reshape(g, c // g, p), d_mean.transpose(1, 2))  # (G,C/G,k)
        var_proj = torch.bmm(d_var, weight.reshape(c, p, 1))  # (C, k, 1)
        return mean_proj.reshape(c, k).t(), var_proj.reshape(c, k).t()

    def _compensated_past(self, site: int,
                          weight: Optional[Tensor]) -> Tuple[Tensor, Tensor, bool]:
        """This rank's window moved to the current weights: ``(μ̂, σ̂², compensated)``, each
        ``(k, C)``, NaN where the window holds no valid entry (an unfilled slot, a skipped
        non-finite statistic): the validity test of :meth:`_window_statistics` drops those,
        and SyncCBN's pooling turns them into invalid pooled entries on every rank.

        Every slot is computed, filled or not: the shapes never depend on the iteration (no
        Python branch on the fill level, nothing for ``torch.compile`` to specialize on).
        """
        past_mean = self.hist_mean[site]
        past_var = self.hist_var[site]
        compensated = weight is not None and self.rho != 0 and self.hist_var_grad.numel() > 0
        if compensated:
            mean_proj, var_proj = self._projections(weight, site)
            shift = self.rho * (mean_proj - self.hist_mean_proj[site])
            past_var = past_var + self.rho * (var_proj - self.hist_var_proj[site]) - shift**2
            past_mean = past_mean + shift
        valid = self.hist_valid[site]
        return (torch.where(valid, past_mean, math.nan), torch.where(valid, past_var, math.nan),
                compensated)

    def _window_statistics(self, site: int, mean: Tensor, var: Tensor,
                           past: Optional[Tuple[Tensor, Tensor, bool]],
                           share: Optional[Tensor]):
        """Window statistics, per-channel 1/n, and the compensation's weight-gradient terms."""
        if past is None:
            return mean, var, torch.ones_like(mean), None
        past_mean, past_var, compensated = past
        valid = (past_var >= 0) & torch.isfinite(past_var) & torch.isfinite(past_mean)
        past_mean = torch.where(valid, past_mean, 0.0)
        past_var = torch.where(valid, past_var, 0.0)
        count = 1 + valid.sum(0).to(mean.dtype)
        mean_bar = (mean + past_mean.sum(0)) / count
        spread = var + (mean - mean_bar)**2
        past_spread = torch.where(valid, past_var + (past_mean - mean_bar)**2, 0.0)
        var_bar = (spread + past_spread.sum(0)) / count
        comp = None
        if compensated and self.grad_through_compensation:
            comp = self._compensation_grad_terms(site, valid, mean_bar, share)
        return mean_bar, var_bar, count.reciprocal(), comp

    def _compensation_grad_terms(self, site: int, valid: Tensor, mean_bar: Tensor,
                                 share: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """``A = Σ_τ v_τ ∂μ_τ/∂W`` and ``E = Σ_τ v_τ (2(μ_τ − μ̄)∂μ_τ/∂W + ∂σ²_τ/∂W)``, (C, P).

        ``∂L/∂W = (ρ/n)(∂L/∂μ̄ · A + ∂L/∂σ̄² · E)``: ``μ̂_τ`` moves ``μ̄`` (weight 1/n) and
        ``σ̄²`` through ``(μ̂_τ − μ̄)²``; ``σ̂²_τ``'s ``−(μ̂_τ − μ_τ)²`` term turns ``μ̂_τ − μ̄``
        into ``μ_τ − μ̄``. SyncCBN: each rank holds its own images' ``μ_τ`` and derivatives,
        and the pooled terms are the sums over ranks of these terms weighted by the rank's
        ``share`` ``m_{r,τ}/m_τ`` of the entry (the pooled ``∂σ²_τ/∂W`` is
        ``Σ_r w_r (∂σ²_{r,τ}/∂W + 2(μ_{r,τ} − μ_τ)∂μ_{r,τ}/∂W)``): every rank returns its part,
        and DDP's gradient reduction adds them.
        """
        d_mean = self.hist_mean_grad[site]  # (G, k, P)
        d_var = self.hist_var_grad[site]  # (C, k, P)
        g, k = d_mean.shape[:2]
        c = d_var.shape[0]
        v = valid.to(d_var.dtype).t()  # (C, k)
        if share is not None:
            v = v * share.to(v.dtype)
        centred = v * 2 * (self.hist_mean[site].t() - mean_bar[:, None])
        centred = torch.where(valid.t(), centred, 0.0)
        coeffs = torch.stack((v, centred))  # (2, C, k)
        a_e = torch.matmul(coeffs.reshape(2, g, c // g, k), d_mean)  # (2, G, C/G, P)
        a, e = a_e.reshape(2, c, -1).unbind(0)
        e = e + torch.bmm(v.unsqueeze(1), d_var).squeeze(1)
        return a, e

    # ------------------------------------------------------------------ saving and loading
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not (self.num_sites and self.buffer_num):
            return
        # the window holds only finite statistics (_push stores a non-finite entry as zeros
        # with its validity bit cleared), so what is written here is clean as it is
        names = _WINDOW_STATS + _MASKS + _COUNTS + _POINTERS
        if self.hist_var_grad.numel():
            names = names + _LAZY_BUFFERS
        for name in names:
            tensor = getattr(self, name)
            destination[prefix + name] = tensor if keep_vars else tensor.detach()

    def _upgrade_state(self, state: Dict[str, Any], version: Optional[int],
                       notes: List[Tuple[str, str]]) -> Dict[str, Any]:
        """Windows of older layouts. Each layout change added entries, and a state dict rebuilt
        as a plain dict has no version metadata, so the entries decide:

        * version 1 (one site, ``E[x²]``, iteration-major derivatives) cannot be reused: BN's
          state and the iteration count load, the window restarts;
        * version 3 saved no element counts: only SyncCBN reads them, to weight the ranks of
          one entry; equal weights until those entries leave the window;
        * version 4 saved no validity mask: derived (:meth:`_with_validity`).
        """
        state = super()._upgrade_state(state, version, notes)
        if any(name in state for name in _V1_BUFFERS):
            for name in _WINDOW + _V1_BUFFERS:
                state.pop(name, None)
            notes.append(('cbn-v1', 'CBN checkpoint of an older layout; running statistics '
                          'and iteration count are loaded, the cross-iteration window '
                          'restarts (reported once for every layer).'))
            return state
        if not self._window_fits(state):
            return state  # no window, or one that _adapt_state restarts or refuses
        window = {name: state[name] for name in _WINDOW if name in state}
        if 'hist_count' not in window:
            window['hist_count'] = torch.ones(window['hist_mean'].shape[:2], dtype=torch.long)
        if 'hist_valid' not in window:
            window = self._with_validity(window)
        state.update(window)
        return state

    def _window_fits(self, state: Dict[str, Any]) -> bool:
        """Whether ``state`` holds a complete window of this ``buffer_num`` (what
        :meth:`_adapt_state` keeps)."""
        mean = state.get('hist_mean')
        lazy = [name for name in _LAZY_BUFFERS if name in state]
        return (all(name in state for name in _WINDOW_STATS + _POINTERS)
                and len(lazy) in (0, len(_LAZY_BUFFERS)) and isinstance(mean, Tensor)
                and mean.dim() == 3 and mean.shape[1] == self.buffer_num)

    def _adapt_state(self, state: Dict[str, Any],
                     notes: List[Tuple[str, str]]) -> Dict[str, Any]:
        """Keep a complete window of this ``buffer_num``; restart one of another size (a
        note), refuse an incomplete one."""
        state = super()._adapt_state(state, notes)
        window = {name: state.pop(name) for name in _WINDOW if name in state}
        if not window:
            return state  # a BN checkpoint, or a CBN that had not trained yet
        needed = _WINDOW_STATS + _POINTERS
        missing = [n for n in needed if n not in window]
        lazy = [n for n in _LAZY_BUFFERS if n in window]
        if missing or 0 < len(lazy) < len(_LAZY_BUFFERS):
            missing += [n for n in _LAZY_BUFFERS if lazy and n not in window]
            raise ValueError(f'CBN checkpoint without {", ".join(missing)} (a BN checkpoint '
                             'has no CBN window, a CBN checkpoint all of it).')
        mean = window['hist_mean']
        if not isinstance(mean, Tensor) or mean.dim() != 3:
            raise ValueError(f'hist_mean of shape {tuple(getattr(mean, "shape", ()))}: '
                             f'expected (sites, buffer_num, {self.num_features})')
        saved_k = mean.shape[1]
        if saved_k != self.buffer_num:
            # A window of another length cannot be reused slot by slot: keep the running
            # statistics and the iteration count, restart the window.
            notes.append((f'cbn-window-size-{saved_k}-{self.buffer_num}',
                          f'the checkpoint\'s CBN window has buffer_num={saved_k}, this layer '
                          f'has buffer_num={self.buffer_num}; running statistics and iteration '
                          'count are loaded, the cross-iteration window restarts (reported '
                          'once for every layer with these sizes).'))
            return state
        state.update(window)
        return state

    @staticmethod
    def _with_validity(window: Dict[str, Any]) -> Dict[str, Any]:
        """Version <= 4 (no validity mask): an entry is valid where its slot was filled
        (``slot < hist_len``) and its statistics are finite; invalid ones are zeroed, as
        :meth:`_push` stores them now."""
        mean, var, length = window['hist_mean'], window['hist_var'], window['hist_len']
        if not (isinstance(var, Tensor) and var.shape == mean.shape
                and isinstance(length, Tensor) and length.shape == mean.shape[:1]):
            return window  # _check_state names the shapes
        filled = (torch.arange(mean.shape[1], device=length.device).view(1, -1)
                  < length.view(-1, 1))
        valid = filled.unsqueeze(-1) & torch.isfinite(mean) & torch.isfinite(var) & (var >= 0)
        window = dict(window, hist_valid=valid)
        for name in _WINDOW_STATS:
            value = window[name]
            if isinstance(value, Tensor) and value.shape == mean.shape:
                window[name] = torch.where(valid, value, torch.zeros((), dtype=value.dtype))
        return window

    def _check_state(self, state: Dict[str, Any], prefix: str) -> List[str]:
        """The window's shapes, dtypes and values: a window that loads is one training can
        continue from (pointers inside the ring, counts >= 0, finite statistics)."""
        if 'hist_mean' not in state:
            return []
        window = {n: state[n] for n in _WINDOW if n in state}
        bad = [n for n, v in window.items() if not isinstance(v, Tensor)]
        if bad:
            return [f'{prefix}{n}: expected a Tensor, got {type(window[n]).__name__}'
                    for n in bad]
        s, k, c = window['hist_mean'].shape[0], self.buffer_num, self.num_features
        expected = dict({n: (s, k, c) for n in _WINDOW_STATS + _MASKS},
                        **{n: (s, k) for n in _COUNTS}, **{n: (s, ) for n in _POINTERS})
        errors = [f'{prefix}{n}: missing from the checkpoint\'s CBN window'
                  for n in expected if n not in window]
        errors += [f'{prefix}{n}: checkpoint shape {tuple(window[n].shape)}, expected {shape}'
                   for n, shape in expected.items() if n in window
                   and tuple(window[n].shape) != shape]
        if errors:
            return errors
        if 'hist_var_grad' in window:
            mean_grad, var_grad = window['hist_mean_grad'], window['hist_var_grad']
            if not (var_grad.dim() == 4 and mean_grad.dim() == 4
                    and tuple(var_grad.shape[:3]) == (s, c, k)
                    and tuple(mean_grad.shape) == (s, mean_grad.shape[1], k, var_grad.shape[3])
                    and mean_grad.shape[1] > 0 and c % mean_grad.shape[1] == 0):
                return [f'{prefix}: CBN({c}) derivative history of shapes '
                        f'{tuple(mean_grad.shape)} and {tuple(var_grad.shape)}; expected '
                        f'({s}, groups, {k}, P) and ({s}, {c}, {k}, P).']
        rules = dict({n: FINITE for n in _WINDOW_STATS + _LAZY_BUFFERS}, hist_var=VARIANCE,
                     **{n: MASK for n in _MASKS}, **{n: COUNT for n in _COUNTS + _POINTERS})
        for name, rule in rules.items():
            if name in window:
                errors += state_value_problems(prefix + name, window[name], rule)
        if errors:
            return errors
        length, ptr = window['hist_len'], window['hist_ptr']
        if bool((length > k).any()):
            errors.append(f'{prefix}hist_len: values must be in [0, {k}] (buffer_num={k}), '
                          f'got {length.tolist()}')
        if bool((ptr >= k).any()):
            errors.append(f'{prefix}hist_ptr: values must be in [0, {k}) (buffer_num={k}), '
                          f'got {ptr.tolist()}')
        elif not errors and bool(((length < k) & (ptr != length)).any()):
            # a ring that has not wrapped yet writes its next entry right after the last one
            errors.append(f'{prefix}hist_ptr: {ptr.tolist()} does not follow hist_len '
                          f'{length.tolist()} (a ring not yet full has hist_ptr == hist_len)')
        return errors

    def _stage_extra_state(self, state: Dict[str, Any]) -> Dict[str, Tensor]:
        """The window as the layer will hold it (its device; its dtype, int64 counters and
        pointers, a bool mask); an empty one when the checkpoint has none (a BN checkpoint,
        another ``buffer_num``, version 1)."""
        tensors = self._empty_window_tensors()
        like = self.hist_mean
        for name in _WINDOW:
            if name in state:
                dtype = (torch.long if name in _INTEGER else
                         torch.bool if name in _MASKS else like.dtype)
                tensors[name] = state[name].detach().to(like.device, dtype, copy=True)
        return tensors

    def _load_extra_state(self, staged: Dict[str, Tensor]) -> None:
        for name, tensor in staged.items():
            setattr(self, name, tensor)
