"""Cross-Iteration Batch Normalization (CBN), a drop-in ``norm_cfg=dict(type='CBN')``.

Yao, Cao, Zheng, Huang, Lin. *Cross-Iteration Batch Normalization*. arXiv:2002.05712
(CVPR 2021). Official code: ``Howal/Cross-iterationBatchNorm`` (``mmdet/models/utils/CBN.py``).
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.registry import MODELS
from torch import Tensor

from .base import NormBase, write_state
from .cbn_window import _WINDOW, CrossIterationWindow
from .collectives import all_reduce_moments, all_reduce_sum, training_sync_group
from .conv_origin import ConvOrigin, convolutions_tapped, producing_conv
from .conversion import convert_norm, synced_variant_of
from .input_checks import check_input_4d
from .iteration_clock import listen_for_iteration_end
from .state_checks import COUNT
from .statistics import batch_moments

__all__ = ['CBN', 'SyncCBN']



class _WindowBatchNorm(torch.autograd.Function):
    r"""``y = γ (x − μ̄)/sqrt(σ̄² + ε) + β`` with window statistics, differentiated exactly.

    The window statistics were computed (without autograd) from the current batch, which enters
    with weight ``1/n_c``, and from past batches whose compensated statistics are linear in the
    conv weight ``W``. Backward, per channel, with ``s_y = Σ g`` and ``s_x = Σ g x̂``:

    * ``∂L/∂x = γ/σ̄ · (g − (s_y + x̂ q σ̄ s_x) / (n M))`` — BN's backward with both reductions
      divided by ``n``; ``q = 1/σ̄`` (``q = 1/sqrt(σ̄²)`` when ε sits outside the root);
    * ``∂L/∂W[c] = ρ/n (∂L/∂μ̄ · A[c] + ∂L/∂σ̄² · E[c])`` with ``A = Σ_τ v_τ ∂μ_τ/∂W`` and
      ``E = Σ_τ v_τ (2(μ_τ − μ̄) ∂μ_τ/∂W + ∂σ²_τ/∂W)`` prepared by the layer;
    * ``∂L/∂γ = s_x``, ``∂L/∂β = s_y``.

    One native inference-mode ``batch_norm`` forward, one native backward (``gx = γ g/σ̄``
    and both reductions), one in-place per-channel affine fix-up of ``gx``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, conv_weight: Optional[Tensor], gamma: Optional[Tensor],
                beta: Optional[Tensor], mean: Tensor, var: Tensor, inv_count: Tensor,
                q_scale: Optional[Tensor], comp: Optional[Tuple[Tensor, Tensor]],
                eps: float, group=None, total: Optional[Tensor] = None) -> Tensor:
        ctx.save_for_backward(x, gamma, mean, var, inv_count, q_scale, total,
                              *(comp if comp is not None else ()))
        ctx.has_comp = comp is not None
        ctx.eps = eps
        ctx.group = group
        if conv_weight is not None:
            ctx.weight_shape, ctx.weight_dtype = conv_weight.shape, conv_weight.dtype
        return torch.batch_norm(x, gamma, beta, mean, var, False, 0.0, eps, False)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, gamma, mean, var, inv_count, q_scale, total, *comp = ctx.saved_tensors
        eps = ctx.eps
        if x.numel():
            grad_x, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
                grad_out.contiguous(), x, gamma, mean, var, None, None, False, eps,
                [ctx.needs_input_grad[0], True, True])
        else:  # a SyncCBN rank without images (the native kernel divides by 0 there)
            grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
            sum_dy_xhat, sum_dy = torch.zeros_like(mean), torch.zeros_like(mean)
        # the statistics' gradients need the sums over every image the statistics saw: this
        # rank's (CBN), or all ranks' in one all-reduce (SyncCBN); γ and β get this rank's
        # part, which DDP's gradient reduction adds up
        all_dy, all_dy_xhat, m = sum_dy, sum_dy_xhat, x.numel() // x.shape[1]
        if ctx.group is not None:
            c = mean.shape[0]
            packed = all_reduce_sum(torch.cat((sum_dy, sum_dy_xhat)).to(mean.dtype), ctx.group)
            all_dy, all_dy_xhat = packed.split((c, c))
            m = total
        invstd = (var + eps).rsqrt()
        g = invstd if gamma is None else gamma * invstd
        q = invstd if q_scale is None else q_scale
        if grad_x is not None:
            k = g * inv_count / m
            slope = (-k * q * all_dy_xhat).to(grad_x.dtype)
            offset = (-k * all_dy - slope * mean).to(grad_x.dtype)
            grad_x.addcmul_(x, slope.view(1, -1, 1, 1)).add_(offset.view(1, -1, 1, 1))
        grad_w = None
        if ctx.has_comp and ctx.needs_input_grad[1]:
            d_mean = -g * all_dy  # ∂L/∂μ̄
            d_var = -0.5 * g * q * all_dy_xhat  # ∂L/∂σ̄²
            a, e = comp
            coeff = inv_count
            grad_w = (a * (coeff * d_mean)[:, None] + e * (coeff * d_var)[:, None])
            grad_w = grad_w.reshape(ctx.weight_shape).to(ctx.weight_dtype)
        grad_gamma = sum_dy_xhat if ctx.needs_input_grad[2] else None
        grad_beta = sum_dy if ctx.needs_input_grad[3] else None
        return (grad_x, grad_w, grad_gamma, grad_beta, None, None, None, None, None, None,
                None, None)


@MODELS.register_module('CBN')
class CBN(CrossIterationWindow, NormBase):
    r"""Cross-Iteration Batch Normalization over a 4D input (a ``Conv2d``'s output).

    Small batches give noisy BN statistics. CBN also uses the statistics of the last ``k``
    iterations, but those were computed with older weights ``W_{t-τ}`` of the conv that
    produced the input; they are moved to the current weights ``W_t`` by a first-order Taylor
    expansion. For channel ``c`` at iteration ``t``, with ``μ = E[x]`` and ``σ² = Var[x]`` over
    ``(N, H, W)`` and ``ΔW = W_t[c] − W_{t-τ}[c]``:

    .. math::
        \hat\mu_{t-τ} &= \mu_{t-τ} + ρ\,\langle ∂\mu_{t-τ}/∂W,\; ΔW\rangle, \qquad
        \hat\sigma^2_{t-τ} = \sigma^2_{t-τ} + ρ\,\langle ∂\sigma^2_{t-τ}/∂W,\; ΔW\rangle
            - (\hat\mu_{t-τ} - \mu_{t-τ})^2 \\
        \bar\mu &= \frac{1}{n}\sum_{τ\in V} \hat\mu_{t-τ}, \qquad
        \bar\sigma^2 = \frac{1}{n}\sum_{τ\in V}
            \big(\hat\sigma^2_{t-τ} + (\hat\mu_{t-τ} - \bar\mu)^2\big), \qquad
        y = γ\,\frac{x - \bar\mu}{\sqrt{\bar\sigma^2 + ε}} + β

    ``V`` holds the current batch (``τ = 0``, always) and every past ``τ ≤ k`` whose
    compensated variance is non-negative and finite (the official code drops invalid past
    entries per channel instead of clamping them); ``n = |V|`` per channel. ``σ̂²`` is the
    official ``ν̂ − μ̂²`` (``ν = E[x²]``) rearranged so that nothing of size ``μ²`` is ever
    subtracted: float32 stays exact for ``|μ|/σ ≫ 1``, where ``E[x²] − E[x]²`` cancels. With
    ``buffer_num=0`` (or during burn-in) CBN is :class:`torch.nn.BatchNorm2d`. The window (a
    ring buffer of past statistics and their derivatives, one per call site) is
    :class:`~mmnorm_plugin.norms.cbn_window.CrossIterationWindow`.

    **Gradient (a deliberate difference from the official code).** ``μ̄`` and ``σ̄²`` depend
    on the current batch (weight ``1/n``) and, through the compensation, on the conv weight
    ``W_t``: the compensated past statistics are the past batches' statistics *as functions
    of* ``W_t``. By default (``grad_through_compensation=True``) CBN backpropagates through
    both, i.e. uses the exact derivative of its forward. The official code detaches the
    compensation. That gradient is not the derivative of what the layer computes, and it
    loses what makes BN trainable with SGD: BN's output does not change when ``W`` is scaled,
    so its gradient is orthogonal to ``W``; the official one is not, and on the small-batch
    study it trains below BN at batch 1 while the exact one does not. The measurements, and
    the control showing that the misdirected tangential part (not the weight growth) is what
    hurts, are in ``configs/cbn/README.md`` ("Small-batch root cause") and
    ``docs/cbn_gradient_control/``. The first-order variance compensation does not scale with
    ``W`` as a variance must, so the invariance holds only approximately, better the smaller
    the weight drift over the window. The exact gradient costs one batched matmul per layer in
    forward and one weight-sized multiply-add in backward.

    **Derivatives.** Only the producing conv's weight is compensated (the paper's
    approximation: earlier layers are ignored); the derivatives cost one weight-gradient
    convolution per layer and iteration (the official code runs two ``autograd.grad`` calls),
    see :class:`~mmnorm_plugin.norms.cbn_window.CrossIterationWindow`. A conv bias is not
    compensated (as in the official code; mmdet's convs before a norm have none).

    **Finding the conv.** Layers are called as ``norm(conv(x))`` everywhere in OpenMMLab, so
    the producing conv is read from the input's autograd graph
    (:func:`~mmnorm_plugin.norms.conv_origin.find_producing_conv`): the weight *as used* (after
    AMP casts or a re-parameterisation such as weight centralization) is what the statistics
    are linear in, so it is the weight that is compensated and that receives the gradient.
    When the input has no autograd history or the conv weight is frozen, nothing needs
    compensating and the plain cross-iteration average is exact w.r.t. that conv. When another
    op produced the input (pooling, addition, deformable or transposed conv), CBN warns once
    and uses the uncompensated cross-iteration average.

    **torch.compile.** Compiled code cannot read the autograd graph, so a compiled CBN finds its
    conv through forward hooks: call :func:`~mmnorm_plugin.norms.conv_origin.tap_convolutions`
    on the model before compiling (CBN raises otherwise; tapped, eager mode reads the same conv
    from the hook). Everything else a training step decides is either a device tensor (ring
    slots, fill levels as validity masks, counters) or decided outside the forward (iteration
    ends and the burn-in phase, at the optimizer step), so ``torch.compile(fullgraph=True)``
    traces the layer without a break and one graph serves every step after the burn-in.

    **Modes.** In eval mode (``model.eval()``, mmdet's ``norm_eval=True``, frozen stages) CBN is
    exactly ``BatchNorm2d`` with running statistics, hence foldable into the conv. During
    burn-in CBN is plain BN. An empty input (0 RoIs) is normalized with the running
    statistics, leaves all state untouched and does not count as an iteration.

    **Bad batches.** A channel whose statistics are not finite (an fp16 overflow upstream)
    updates neither its running statistics nor, in later iterations, the window: its entry is
    stored as zeros with its bit in the validity mask ``hist_valid`` cleared (derivatives as
    zeros too), so the next clean batch is normalized as if the bad one never happened and no
    checkpoint ever holds a NaN. Such steps are counted in ``nonfinite_count`` and logged once.

    **Iterations and call sites.** The window is cross-*iteration*, so CBN must know where an
    iteration ends: at an optimizer step. Every ``torch.optim`` optimizer runs a global step
    post-hook that ends the iteration of every CBN
    (:func:`~mmnorm_plugin.norms.iteration_clock.listen_for_iteration_end`; Python flags only,
    no device sync); a loop that updates weights without ``torch.optim`` calls
    :func:`~mmnorm_plugin.norms.iteration_clock.end_iteration`. Calls between two steps are
    *call sites* of one iteration, each with its own window: a head shared across 5 FPN levels
    (RetinaNet, FCOS, RPN) keeps 5 windows, one per level, and ``num_iters`` and the burn-in
    count optimizer steps, not calls, whether or not the layer or its conv is trainable. The
    number of sites is learned in the first iteration; an iteration with more calls (an
    optimizer step skipped by AMP's loss scaler) wraps around. With gradient accumulation every
    micro-batch is a site of its own. The calls of one iteration must normalize outputs of one
    conv (the window compensates that conv's weight changes): a CBN applied to two different
    convs in one iteration raises, before changing any state. Activation checkpointing
    (``with_cp=True``) re-runs the forward during backward, which would push every batch
    twice: CBN raises there, naming the fix.

    **State.** The iteration counter and BN's running statistics are registered buffers; the
    window is saved in the state dict once it exists, so checkpoints carry everything and a
    run resumed at iteration ``t`` reproduces iteration ``t+1``. No training step reads a
    tensor back to the host (ring pointers are device tensors used as indices; the iteration
    counter is mirrored in Python and re-read on ``load_state_dict``). A plain BN checkpoint
    (ImageNet backbones) loads without missing keys and starts empty windows; a CBN checkpoint
    with another ``buffer_num`` keeps its running statistics and iteration count and restarts
    the windows (a warning names both sizes). Loading is
    :class:`~mmnorm_plugin.norms.base.NormBase`'s transaction: a checkpoint that does not fit
    (keys, shapes, dtypes, counters, ring pointers, non-finite values in the layer's dtype)
    leaves the layer untouched; so does a refused input (dtype, device, rank, one value per
    channel), checked before the first state change.

    Args:
        num_features (int): ``C`` from an expected input of size ``(N, C, H, W)``.
        eps (float): added to the variance inside the square root, for numerical stability.
            Default: 1e-5 (BN's, and what ``build_norm_layer`` injects).
        momentum (float, optional): weight of the new value in the running statistics' EMA
            (PyTorch's convention); ``None`` for a cumulative average. Default: 0.1 (BN's and
            the official code's).
        affine (bool): learn ``γ`` and ``β``. Default: ``True``.
        track_running_stats (bool): keep running statistics, which eval mode normalizes with
            (``False``: eval uses the test batch's statistics, as BN). Default: ``True``.
        buffer_num (int): past iterations ``k`` in the window (``k + 1`` batches per
            statistic); 0 is BN. Default: 3, the released detection configs' value.
        burnin_iters (int): training iterations (optimizer steps, not calls) of plain BN
            before the window is used: the paper's remedy for early weights that move too fast
            for a first-order compensation. Default: 0 (the official layer's). A config sets a
            burn-in in epochs with :class:`~mmnorm_plugin.engine.cbn_hooks.CBNBurnInHook`; the
            COCO configs keep the release's 8 epochs, which detection from scratch needs (see
            ``configs/cbn/README.md`` and ``docs/norm_sweep_defaults_photo-digits_scratch.md``).
        rho (float): scale of the Taylor compensation; ``0`` is the uncompensated average of
            past statistics (the paper's ablation baseline). Default: 1.0 (the paper's).
        eps_outside_sqrt (bool): normalize with ``sqrt(σ²) + ε`` as the official code does,
            in training and eval. Default: ``False``: the paper's ``sqrt(σ² + ε)`` keeps BN
            checkpoints and BN folding exact.
        grad_through_compensation (bool): backpropagate through the compensated past
            statistics into the producing conv's weight, the exact derivative of the forward
            (see "Gradient"). Default: ``True``; ``False`` is the official gradient.
        max_call_sites (int): most call sites (windows) per iteration; more calls without an
            optimizer step start a new iteration, which bounds the memory of loops that never
            step an optimizer. Default: 8 (FPN heads are shared over 5 levels).
        running_stats (str): what the running statistics average: ``'window'``, the window
            statistics training normalized with, so that evaluation normalizes as training
            did, or ``'batch'``, the current batch's mean and unbiased variance (the official
            update, as BN). Default: ``'window'``, kept on paired seeds (see
            ``docs/norm_sweep_defaults_tiny-coco-hard_scratch.md`` and
            ``configs/cbn/README.md``). During burn-in both are the current batch's.

    Shape:
        - Input: :math:`(N, C, H, W)`, ideally a ``Conv2d``'s output (compensated); any other
          producer gets the uncompensated window average and a warning.
        - Output: :math:`(N, C, H, W)` (same shape as input).

    Examples::

        >>> conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        >>> cbn = CBN(8, buffer_num=3)
        >>> optimizer = torch.optim.SGD(list(conv.parameters()) + list(cbn.parameters()), lr=0.1)
        >>> for _ in range(5):
        ...     cbn(conv(torch.randn(2, 3, 16, 16))).square().mean().backward()
        ...     optimizer.step()  # also ends CBN's iteration
        ...     optimizer.zero_grad()
        >>> cbn.num_iters, cbn.hist_len
        (tensor(5), tensor([3]))
        >>> # in an mmdet config: norm_cfg = dict(type='CBN', buffer_num=3)

    Notes:
        * The official code counts every call as an iteration, so a shared head mixes FPN
          levels in one window and ends its burn-in 5× early; here each call site has its own
          window (see above).
        * Statistics are per GPU. :class:`SyncCBN` pools them over GPUs; mmengine's
          ``sync_bn='torch'`` converts CBN into it once the plugin is imported.
        * Histories are per rank (per GPU). DDP with ``broadcast_buffers=True`` overwrites the
          window statistics from rank 0 each step; mmengine's default is ``False``.
        * The burn-in is two-stage only (the official default ``two_stage=True``).
    """
    # the window's layout: 2 per-site windows, 3 E[x²] -> variances, 4 element counts,
    # 5 the validity mask hist_valid (upgrades: CrossIterationWindow._upgrade_state)
    _version = 5
    _optional_state = ('num_batches_tracked', 'num_iters')  # BN checkpoints lack num_iters
    _state_rules = dict(NormBase._state_rules, num_iters=COUNT)

    def __init__(self,
                 num_features: int,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1,
                 affine: bool = True,
                 track_running_stats: bool = True,
                 buffer_num: int = 3,
                 burnin_iters: int = 0,
                 rho: float = 1.0,
                 eps_outside_sqrt: bool = False,
                 grad_through_compensation: bool = True,
                 max_call_sites: int = 8,
                 running_stats: str = 'window',
                 device=None,
                 dtype=None) -> None:
        if int(buffer_num) != buffer_num or buffer_num < 0:
            raise ValueError(f'CBN buffer_num must be a non-negative integer, got {buffer_num}')
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.buffer_num = int(buffer_num)
        self.burnin_iters = burnin_iters  # validated by the property
        self.rho = float(rho)
        self.eps_outside_sqrt = bool(eps_outside_sqrt)
        self.grad_through_compensation = bool(grad_through_compensation)
        if int(max_call_sites) != max_call_sites or max_call_sites < 1:
            raise ValueError(f'CBN max_call_sites must be a positive integer, got {max_call_sites}')
        self.max_call_sites = int(max_call_sites)
        if running_stats not in ('batch', 'window'):
            raise ValueError(
                f"CBN running_stats must be 'batch' or 'window', got {running_stats!r}")
        self.running_stats = running_stats
        self.register_buffer('num_iters', torch.zeros((), device=device, dtype=torch.long))
        self._empty_window(device=device, dtype=dtype)
        self._reset_iteration_state()
        self._finish_init()
        listen_for_iteration_end(self)

    # -------------------------------------------------------------------- iteration state
    def _reset_iteration_state(self) -> None:
        """Re-read the iteration counter's Python mirror (construction, reset, load only)."""
        self._iters = int(self.num_iters)  # iterations ended (at a save: also started)
        self._site = -1  # no call in this iteration yet: the next training call starts one
        self._producer = None  # id of the conv weight this iteration's calls normalize
        # the number of call sites per iteration is known once an iteration has ended
        self._sites_known = self._iters >= 2 and self.num_sites > 0
        self._update_phase()

    def _update_phase(self) -> None:
        # Whether the next iteration uses the window, decided where iterations end (outside
        # any compiled region): the forward reads a bool that changes once, not a counter
        # that changes every step (torch.compile would recompile on each value).
        self._window_on = self.buffer_num > 0 and self._iters + 1 > self._burnin_iters

    @property
    def burnin_iters(self) -> int:
        """Training iterations (optimizer steps) of plain BN before the window is used."""
        return self._burnin_iters

    @burnin_iters.setter
    def burnin_iters(self, value: int) -> None:
        if int(value) != value or value < 0:
            raise ValueError(f'CBN burnin_iters must be a non-negative integer, got {value}')
        self._burnin_iters = int(value)
        if hasattr(self, '_iters'):
            self._update_phase()

    def reset_history(self) -> None:
        """Forget the cross-iteration windows and restart the burn-in counter."""
        self.num_iters.zero_()
        self._empty_window()
        self._reset_iteration_state()

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        if hasattr(self, 'hist_var_grad'):  # _NormBase.__init__ calls this before ours
            self.reset_history()

    def __setstate__(self, state):
        # deepcopy / pickle build the layer without __init__: it must hear iteration ends too
        super().__setstate__(state)
        listen_for_iteration_end(self)

    # ------------------------------------------------------------------------- loading
    # Through NormBase (validated, then committed whole) and the window's hooks
    # (CrossIterationWindow); here what is CBN's own: the iteration counter and its mirror.
    def _adapt_state(self, state: Dict[str, Any],
                     notes: List[Tuple[str, str]]) -> Dict[str, Any]:
        if 'num_iters' not in state:  # a BN checkpoint: nothing is missing, no iteration yet
            state['num_iters'] = torch.zeros_like(self.num_iters)
        return super()._adapt_state(state, notes)

    def _after_load(self) -> None:
        super()._after_load()
        self._reset_iteration_state()

    def eval_statistics(self) -> Tuple[Tensor, Tensor]:
        mean, var = super().eval_statistics()
        return mean, self._effective_var(var)[0]

    # ------------------------------------------------------------------ iterations, sites
    @property
    def window_active(self) -> bool:
        """Whether the current training iteration uses past statistics (after burn-in); between
        two iterations (after an optimizer step), whether the next one will."""
        return self._window_on

    def _end_iteration(self) -> None:
        """An optimizer step happened (:func:`~.iteration_clock.listen_for_iteration_end`): the
        next training call starts a new iteration. Python state only, outside the forward."""
        if self._site >= 0:
            self._sites_known = self.num_sites > 0
            self._site = -1
            self._producer = None
            self._iters += 1
            self._update_phase()

    def _next_call_site(self, origin: Optional[ConvOrigin]) -> int:
        """The call site of this training call; counts an iteration when one starts.

        An iteration ends at an optimizer step (:meth:`_end_iteration`); calls in between are
        call sites of one iteration, each with its own window. More calls than the learned
        number of sites (an optimizer step skipped by AMP's loss scaler), or than
        ``max_call_sites`` before any step, start a new iteration. Raises, before any state
        changes, when calls of one iteration normalize outputs of different convolutions.
        """
        producer = None if origin is None or origin.parameter is None else id(
            origin.parameter)
        new_iteration = self._site < 0 or self._site + 1 >= (
            self.num_sites if self._sites_known else self.max_call_sites)
        if not new_iteration and producer != self._producer:
            raise RuntimeError(
                f'{type(self).__name__}({self.num_features}) normalized the outputs of two '
                f'different convolutions in one training iteration (call site '
                f'{self._site + 1}): its cross-iteration windows and derivative history '
                'belong to one producing conv, whose weight changes they compensate. Give '
                'each conv its own norm layer; calling one conv several times per iteration '
                '(a head shared across FPN levels) is fine.')
        if new_iteration:
            self._end_iteration()  # (a no-op after an optimizer step: it ran there)
            self._site = 0
            self._producer = producer
            write_state(self, 'num_iters', self.num_iters + 1)
        else:
            self._site += 1
        if self.buffer_num and self._site >= self.num_sites:
            self._add_site()
        return self._site

    # ---------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        if not self.training and self.running_mean is not None:
            return self._normalize(x, self.running_mean, self.running_var)
        if not self.training:  # eval without running statistics: current batch, no state
            mean, var = self._batch_moments(x)
            return self._normalize(x, mean, var)
        compiling = torch.compiler.is_compiling()
        if not compiling and torch._C._current_graph_task_id() != -1:
            raise RuntimeError(
                f'{type(self).__name__}({self.num_features}) ran a training forward inside a '
                'backward pass: activation checkpointing (with_cp=True, '
                'torch.utils.checkpoint) recomputes forwards, which would push every batch '
                'into the window twice. Set with_cp=False in the modules that contain CBN.')
        group = self._sync_group()
        if x.numel() == 0 and group is None:
            # 0 RoIs: no statistics, no call site, state untouched
            mean = self.running_mean if self.running_mean is not None else x.new_zeros(
                self.num_features)
            var = self.running_var if self.running_var is not None else x.new_ones(
                self.num_features)
            return self._normalize(x, mean, var)
        m = x.numel() // x.shape[1]
        # every refusal before the first state change: dtype, device, one value per channel
        # (synced: the pooled count is on the device), then the conv check of the call site
        self._check_batch(x, m if group is None else -1)
        if compiling and self.buffer_num and not convolutions_tapped():
            # compiled code cannot read the autograd graph: without taps every window would
            # silently go uncompensated, unlike the same model in eager mode
            raise RuntimeError(
                f'{type(self).__name__} under torch.compile finds its producing conv through '
                'forward hooks: call mmnorm_plugin.norms.tap_convolutions(model) '
                'before compiling the model.')
        origin = producing_conv(x) if self.buffer_num else None
        site = self._next_call_site(origin)

        with torch.no_grad():
            mean, var = self._batch_moments(x)
            weight = grads = past = None
            if self.window_active:
                weight, grads = self._conv_terms(x, mean, origin)
                if grads is not None:
                    self._prepare_history(grads)
                past = self._compensated_past(site, weight)
            # the statistics of the batch (of every rank's batch, SyncCBN) and of the window
            total, batch_mean, batch_var, past, share = self._pool(site, m, mean, var, past,
                                                                   group)
            mean_bar, var_bar, inv_count, comp = self._window_statistics(
                site, batch_mean, batch_var, past, share)
            if self.window_active:
                self._push(site, mean, var, m, weight, grads)
            if self.track_running_stats:
                # SyncCBN: a step in which every rank's batch was empty counts no batch
                present = None if group is None else (total > 0).view(())
                if self.running_stats == 'window':  # what training normalized with
                    values = total / inv_count
                    self._update_running_stats(mean_bar, var_bar * values / (values - 1),
                                               present)
                else:
                    self._update_running_stats(batch_mean, batch_var * (total / (total - 1)),
                                               present)
        live_weight = None
        if comp is not None and self.grad_through_compensation:
            live_weight = origin.live_weight
            if live_weight is None or not live_weight.requires_grad:
                live_weight, comp = None, None
        else:
            comp = None
        return self._normalize_train(x, mean_bar, var_bar, inv_count, live_weight, comp,
                                     group, None if group is None else total)

    def _sync_group(self):
        """The process group to pool statistics over; None: this rank's batch only (CBN)."""
        return None

    def _pool(self, site: int, m: int, mean: Tensor, var: Tensor,
              past: Optional[Tuple[Tensor, Tensor, bool]], group):
        """``(count, mean, var, past, share)`` of the batch and the window entries.

        CBN: this rank's own, unchanged (``share`` None). SyncCBN pools every rank's (and
        returns each past entry's share of this rank, which weights its gradient terms).
        """
        return m, mean, var, past, None

    def _normalize(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        """Constant statistics: one native inference-mode ``batch_norm``."""
        var, _ = self._effective_var(var)
        return torch.batch_norm(x, self.weight, self.bias, mean, var, False, 0.0, self.eps,
                                False)

    def _effective_var(self, var: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """``var'`` with ``sqrt(var' + ε) = sqrt(var) + ε`` for the official ε placement, and
        ``q = ∂(1/std)/∂var ÷ (−½ invstd²)`` that the backward needs for it."""
        if not self.eps_outside_sqrt:
            return var, None
        std = var.sqrt()
        return (std + self.eps)**2 - self.eps, std.clamp_min(1e-30).reciprocal()

    def _normalize_train(self, x: Tensor, mean: Tensor, var: Tensor, inv_count: Tensor,
                         live_weight: Optional[Tensor], comp: Optional[Tuple[Tensor, Tensor]],
                         group=None, total: Optional[Tensor] = None) -> Tensor:
        var, q_scale = self._effective_var(var)
        dtype = self._state_dtype()
        if comp is not None:
            comp = tuple(t * self.rho for t in comp)
        return _WindowBatchNorm.apply(x, live_weight, self.weight, self.bias, mean.to(dtype),
                                      var.to(dtype), inv_count, q_scale, comp, self.eps, group,
                                      total)

    def _batch_moments(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        # In (at least) the state precision and without E[x²]−E[x]² cancellation: one native
        # group-norm pass (var_mean over (0, 2, 3) is several times slower on CPU)
        dtype = self._state_dtype()
        if x.numel() == 0:  # a SyncCBN rank without images: weight 0 in the pooled statistics
            zeros = x.new_zeros(self.num_features, dtype=dtype)
            return zeros, zeros
        var, mean = batch_moments(x)
        return mean.to(dtype), var.to(dtype)

    def __prepare_scriptable__(self):
        """``torch.jit.script`` support: in eval mode CBN *is* a BatchNorm2d, script that.

        Training needs the autograd graph (to find the producing conv) and a custom autograd
        function, neither of which TorchScript has: scripting a training-mode CBN raises, and
        the scripted module refuses training mode.
        """
        if self.training:
            raise RuntimeError('CBN can only be scripted in eval mode (call .eval() first): '
                               'its training step reads the autograd graph.')
        bn = _EvalOnlyCBN(self.num_features, self.eps, self.momentum, self.affine,
                          self.track_running_stats, device=self.hist_mean.device,
                          dtype=self.hist_mean.dtype)
        state = {k: v for k, v in self.state_dict().items() if k not in _WINDOW + ('num_iters', )}
        if self.eps_outside_sqrt and self.running_var is not None:
            state['running_var'] = self._effective_var(self.running_var)[0]
        bn.load_state_dict(state)
        return bn.eval()

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, buffer_num={self.buffer_num}, '
                f'burnin_iters={self.burnin_iters}, rho={self.rho}, '
                f'eps_outside_sqrt={self.eps_outside_sqrt}, '
                f'grad_through_compensation={self.grad_through_compensation}, '
                f'running_stats={self.running_stats}, max_call_sites={self.max_call_sites}')


@MODELS.register_module('SyncCBN')
@synced_variant_of(CBN)
class SyncCBN(CBN):
    r"""CBN whose statistics pool the images of every process (GPU): ``type='SyncCBN'``.

    What ``nn.SyncBatchNorm`` is to BN: in a process group of ``R > 1`` ranks, every entry of
    the window (the current batch and each compensated past batch) is the statistic of the
    union of the ranks' batches, so ``R`` GPUs × ``b`` images normalize exactly as CBN on one
    GPU with ``R·b`` images (outputs, input and parameter gradients, running statistics and
    windows; ``tests/test_norms/test_sync_cbn.py`` checks it with 2 gloo processes). Outside a
    process group (or in a group of one, or in eval mode) it *is* :class:`CBN`: same code, no
    communication.

    **What travels.** Each rank keeps its own images' window (statistics, element counts and
    derivative history) and compensates it locally to the current weights, which DDP keeps
    identical on every rank. The compensation is linear in the weights, so the compensated
    statistics of the union are the count-weighted pools of the ranks' compensated statistics
    (:math:`\hat\sigma^2` included: the pooled first-order variance correction equals the
    ranks' corrections plus the spread of their mean shifts). Hence no weight-sized tensor
    ever travels: per layer and iteration,

    * forward, one ``all_reduce`` of ``[m, m·μ̂, m·(σ̂² + μ̂²)]`` for the current batch and
      the ``k`` slots of the window (a slot not filled yet travels with count 0, so the
      message has one size from the first window iteration on): ``(k+1)(2C+1)`` float64
      numbers
      (:func:`~mmnorm_plugin.norms.collectives.all_reduce_moments`; float64 keeps the pooled
      variance free of cancellation);
    * backward, one ``all_reduce`` of ``[Σg, Σg·x̂]`` (``2C`` numbers in the statistics'
      dtype): the input gradient and the conv-weight gradient through the compensation need
      the sums over all images. Each rank returns its part of the parameter gradients (its own
      ``Σg``, ``Σg·x̂`` for γ and β, its own images' derivative terms for the conv weight),
      which DDP's gradient reduction adds up, as with ``nn.SyncBatchNorm``.

    ``nn.SyncBatchNorm`` moves ``R(2C+1)`` float32 numbers forward (an ``all_gather``) and
    ``2C`` backward: at ``k = 3``, ``C = 256`` SyncCBN sends 16,416 bytes forward and 2,048
    backward, SyncBN 2,052·R bytes forward (16,416 at 8 GPUs) and 2,048 backward.

    **Uneven and empty batches.** Each entry is weighted by its element count, so ranks with
    different numbers of images (or RoIs) pool correctly; a rank with an empty input still
    takes part in both collectives with weight 0, and its window keeps a weight-0 entry so
    that slot ``τ`` means the same iteration on every rank. As with ``nn.SyncBatchNorm``, a
    rank whose output never reaches the loss runs no backward and leaves the others waiting
    in theirs. The one-value-per-channel check of training is left to the pooled batch (the
    total count is on the device; reading it would stall every step). When every rank's batch
    is empty the step leaves the running statistics and ``num_batches_tracked`` alone, and its
    window entry, pooled from 0 images, is dropped like a bad batch's.

    **Iterations** end at each rank's optimizer step, exactly as in CBN; DDP steps every
    rank's optimizer together, so all ranks agree on call sites and window slots.

    Checkpoints are CBN's (same keys and shapes): a CBN checkpoint loads into SyncCBN and
    back. mmengine's ``sync_bn='torch'`` converts CBN into SyncCBN (``from_unsynced``) when
    the plugin is imported, and mmengine's ``revert_sync_batchnorm`` reverts it
    (``to_unsynced``); see :mod:`mmnorm_plugin.distributed.sync_bn`.

    Args:
        process_group (optional): the ranks to pool over. Default: ``None``, the default
            group (every rank), as ``nn.SyncBatchNorm``.
        Every other argument is :class:`CBN`'s, with its default.

    Shape:
        - Input: :math:`(N, C, H, W)`; ``N`` may differ between ranks, and be 0.
        - Output: :math:`(N, C, H, W)` (same shape as input).

    Examples::

        >>> # in an mmdet config: norm_cfg = dict(type='SyncCBN', buffer_num=3), or CBN and
        >>> # mmengine's sync_bn='torch'
        >>> layer = SyncCBN.from_unsynced(CBN(8, buffer_num=3))
        >>> layer.buffer_num, layer.process_group  # outside a process group: CBN exactly
        (3, None)
    """

    def __init__(self, num_features: int, *args, process_group=None, **kwargs) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.process_group = process_group

    @classmethod
    def from_unsynced(cls, module: CBN, process_group=None) -> 'SyncCBN':
        """A SyncCBN with ``module``'s hyperparameters, parameters and buffers (the same
        objects, as ``nn.SyncBatchNorm.convert_sync_batchnorm``) and windows (copied)."""
        return convert_norm(module, cls, CBN, process_group=process_group)

    def to_unsynced(self) -> CBN:
        """The CBN with this layer's hyperparameters, parameters and state."""
        return convert_norm(self, CBN, CBN)

    def _sync_group(self):
        return training_sync_group(self)

    def _pool(self, site, m, mean, var, past, group):
        if group is None:
            return super()._pool(site, m, mean, var, past, group)
        counts = self.hist_count.new_full((1, ), m)
        means, variances = mean.unsqueeze(0), var.unsqueeze(0)
        if past is not None:
            counts = torch.cat((counts, self.hist_count[site, :past[0].shape[0]]))
            means = torch.cat((means, past[0]))
            variances = torch.cat((variances, past[1]))
        counts = counts.unsqueeze(1)
        total, means, variances = all_reduce_moments(counts, means, variances, group)
        if past is None:
            return total[0], means[0], variances[0], None, None
        # this rank's share of each past entry; an entry pooled from no image is invalid
        share = counts[1:, 0].to(total.dtype) / total[1:, 0].clamp_min(1)
        return total[0], means[0], variances[0], (means[1:], variances[1:], past[2]), share

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, process_group={self.process_group}'


class _EvalOnlyCBN(torch.nn.BatchNorm2d):
    """What ``torch.jit.script`` makes of an eval-mode CBN: BN with its statistics, eval only."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError('CBN expects a 4-D NCHW input')
        if self.training:
            raise RuntimeError('CBN training was ignored by TorchScript: a scripted CBN is '
                               'eval-only (train the eager module).')
        return torch.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                                False, 0.0, self.eps, False)
