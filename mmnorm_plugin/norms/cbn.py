"""Cross-Iteration Batch Normalization (CBN), a drop-in ``norm_cfg=dict(type='CBN')``.

Yao, Cao, Zheng, Huang, Lin. *Cross-Iteration Batch Normalization*. arXiv:2002.05712
(CVPR 2021). Official code: ``Howal/Cross-iterationBatchNorm`` (``mmdet/models/utils/CBN.py``).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.grad import conv2d_weight
from torch.nn.modules.batchnorm import _BatchNorm

from .functional import (ConvOrigin, check_input_4d, find_producing_conv, normalize_with_stats,
                         update_running_stats, warn_once)

__all__ = ['CBN']

# Buffers that only CBN has; a plain BN checkpoint has none of them (see _load_from_state_dict).
_HISTORY_BUFFERS = ('num_iters', 'hist_len', 'hist_ptr', 'hist_mean', 'hist_sqmean',
                    'hist_mean_proj', 'hist_sqmean_proj', 'hist_mean_grad', 'hist_sqmean_grad')
# Their shape depends on the producing conv's weight, unknown until the first forward.
_LAZY_BUFFERS = ('hist_mean_grad', 'hist_sqmean_grad')


@MODELS.register_module('CBN')
class CBN(_BatchNorm):
    r"""Cross-Iteration Batch Normalization for NCHW activations produced by a ``Conv2d``.

    Small batches give noisy BN statistics. CBN also uses the statistics of the last ``k``
    iterations, but those were computed with older weights ``W_{t-τ}`` of the conv that
    produced the input; they are moved to the current weights ``W_t`` by a first-order Taylor
    expansion. For channel ``c`` at iteration ``t``, with ``μ = E[x]`` and ``ν = E[x²]`` over
    ``(N, H, W)``:

    .. math::
        \hat\mu_{t-τ,c} &= \mu_{t-τ,c} + ρ\,\langle ∂\mu_{t-τ,c}/∂W[c],\; W_t[c]-W_{t-τ}[c]\rangle \\
        \hat\nu_{t-τ,c} &= \nu_{t-τ,c} + ρ\,\langle ∂\nu_{t-τ,c}/∂W[c],\; W_t[c]-W_{t-τ}[c]\rangle \\
        \bar\mu_c &= \frac{1}{n_c}\sum_{τ\in V_c} \hat\mu_{t-τ,c}, \qquad
        \bar\sigma^2_c = \frac{1}{n_c}\sum_{τ\in V_c} \hat\nu_{t-τ,c} - \bar\mu_c^2 \\
        y &= γ\,\frac{x - \bar\mu}{\sqrt{\bar\sigma^2 + ε}} + β

    ``V_c`` holds the current batch (``τ = 0``, always) and every past ``τ ≤ k`` whose
    compensated variance ``ν̂ − μ̂²`` is non-negative (the official code drops invalid past
    entries per channel instead of clamping them); ``n_c = |V_c|``. Gradients flow through the
    current batch's ``μ_t, ν_t`` only (as in the official code); history and compensation are
    constants. ``σ̄²`` is evaluated as the law of total variance, ``mean(ν̂−μ̂²) + mean((μ̂−μ̄)²)``,
    with a two-pass variance for the current batch: the same function, but ``buffer_num=0``
    then coincides with :class:`torch.nn.BatchNorm2d` to rounding, and ``σ̄² ≥ 0`` by
    construction.

    **Derivatives, cheaply and exactly.** Only the producing conv's weight is compensated (the
    paper's approximation: earlier layers are ignored). Output channel ``c`` depends on filter
    ``W[c]`` only, so per channel: ``∂μ_c/∂W[c]`` is the mean input patch, identical for every
    channel of a conv group (``G × C_in/G·kh·kw`` numbers), and ``∂ν_c/∂W[c] = (2/M) Σ x_c ·
    patch`` is one weight-gradient convolution with ``grad_output = 2x/M``. The official code
    runs two full ``autograd.grad`` calls instead. Since
    ``⟨D, W_t − W_{t−τ}⟩ = ⟨D, W_t⟩ − ⟨D, W_{t−τ}⟩`` and the second term is known at ``t−τ``,
    a past iteration costs one weight-sized tensor (``∂ν/∂W``) plus ``O(C + C_in k²)`` numbers,
    against three weight-sized tensors in the official layout. For a bias-free conv ``μ`` is
    linear in ``W`` and its compensation is exact; ``ν``'s error is second order in the step.

    **Finding the conv.** Layers are called as ``norm(conv(x))`` everywhere in OpenMMLab, so
    the producing conv is read from the input's autograd graph
    (:func:`~mmnorm_plugin.norms.functional.find_producing_conv`): the weight *as used* (after
    AMP casts or a re-parameterisation such as weight centralization) is what the statistics
    are linear in, so it is the weight that is compensated. When the input has no autograd
    history or the conv weight is frozen, nothing needs compensating and the plain
    cross-iteration average is exact w.r.t. that conv. When another op produced the input
    (pooling, addition, deformable or transposed conv), CBN warns once and uses the
    uncompensated cross-iteration average.

    **Modes.** In eval mode (``model.eval()``, mmdet's ``norm_eval=True``, frozen stages) CBN is
    exactly ``BatchNorm2d`` with running statistics, hence foldable into the conv. Running
    statistics are updated, as in the official code and in BN, with the *current* batch (mean
    and unbiased variance), not with the cross-iteration estimate: they then mean the same as
    in a BN checkpoint. During burn-in CBN is plain BN. An empty input (0 RoIs) is normalized
    with the running statistics and leaves statistics and history untouched.

    **State.** Everything lives in registered buffers (iteration counter, ring buffer of the
    last ``buffer_num`` iterations), so ``.to()``, DDP's initial broadcast and checkpoints carry
    it and a run resumed at iteration ``t`` reproduces iteration ``t+1``. The two
    weight-shaped history buffers are allocated, in place, at the first training forward
    (the conv is unknown at construction); loading a checkpoint resizes them. A plain BN
    checkpoint (ImageNet backbones) has no CBN buffers: it loads without missing keys and
    starts an empty history. Parameter/buffer names and the ``bn`` abbreviation are BN's, so
    mmdet's ``norm_eval``, zero-init, mmengine's ``norm_decay_mult`` and BN checkpoints work.

    Args:
        num_features (int): channels ``C``.
        eps (float): added to the variance inside the square root. Default 1e-5 (BN's, and
            what ``build_norm_layer`` injects).
        momentum (float | None): running-statistics EMA factor in PyTorch's convention;
            ``None`` for a cumulative average. Default 0.1 (BN's and the official code's).
        affine (bool): learn ``γ, β``. Default True.
        track_running_stats (bool): keep running statistics for eval. Default True.
        buffer_num (int): number of past iterations ``k`` in the window (window = ``k + 1``
            batches). Default 3, the released detection configs' value.
        burnin_iters (int): training forward calls during which CBN is plain BN; the window is
            used from call ``burnin_iters + 1`` on. Early in training the weights move too fast
            for a first-order compensation. Default 0 (the official layer's default). A config
            expresses a burn-in in epochs with
            :class:`~mmnorm_plugin.engine.cbn_hooks.CBNBurnInHook`, which sets this from the
            dataloader length at the start of training (the official ``tools/train.py``
            converted epochs to iterations the same way).
        rho (float): scale of the Taylor compensation; ``0`` gives the naive average of past
            statistics (the paper's ablation baseline). Default 1.0.
        eps_outside_sqrt (bool): normalize with ``sqrt(σ²) + ε`` as the official code does, in
            training and eval. Default False: the paper writes BN's ``sqrt(σ² + ε)``, which keeps
            BN checkpoints and BN folding exact.

    Notes:
        * Each training forward counts as one iteration; a layer applied several times per
          iteration (a head shared across FPN levels) mixes levels in its window, as in the
          official code. Activation checkpointing (``with_cp=True``) re-runs forwards and
          would update the state twice; do not combine them.
        * mmengine's ``sync_bn='torch'`` converts every ``_BatchNorm`` (CBN included) into
          ``nn.SyncBatchNorm``, which silently replaces the method: do not set it.
        * The burn-in is two-stage only (the official default ``two_stage=True``).
    """
    _abbr_ = 'bn'

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
                 device=None,
                 dtype=None) -> None:
        if int(buffer_num) != buffer_num or buffer_num < 0:
            raise ValueError(f'CBN buffer_num must be a non-negative integer, got {buffer_num}')
        if int(burnin_iters) != burnin_iters or burnin_iters < 0:
            raise ValueError(
                f'CBN burnin_iters must be a non-negative integer, got {burnin_iters}')
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.buffer_num = int(buffer_num)
        self.burnin_iters = int(burnin_iters)
        self.rho = float(rho)
        self.eps_outside_sqrt = bool(eps_outside_sqrt)
        k, c = self.buffer_num, num_features
        kw = dict(device=device, dtype=dtype)
        long = dict(device=device, dtype=torch.long)
        self.register_buffer('num_iters', torch.zeros((), **long))
        self.register_buffer('hist_len', torch.zeros((), **long))
        self.register_buffer('hist_ptr', torch.zeros((), **long))
        self.register_buffer('hist_mean', torch.zeros(k, c, **kw))
        self.register_buffer('hist_sqmean', torch.zeros(k, c, **kw))
        # <dμ/dW, W>, <dν/dW, W> with the weights of the iteration that stored the entry
        self.register_buffer('hist_mean_proj', torch.zeros(k, c, **kw))
        self.register_buffer('hist_sqmean_proj', torch.zeros(k, c, **kw))
        # (k, G, C_in/G·kh·kw) and (k, C, C_in/G·kh·kw), sized at the first training forward
        self.register_buffer('hist_mean_grad', torch.zeros(0, **kw))
        self.register_buffer('hist_sqmean_grad', torch.zeros(0, **kw))

    # ----------------------------------------------------------------------------- state
    def reset_history(self) -> None:
        """Forget the cross-iteration window and restart the burn-in counter."""
        for name in _HISTORY_BUFFERS:
            getattr(self, name).zero_()

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        if hasattr(self, 'hist_sqmean_grad'):  # _NormBase.__init__ calls this before ours
            self.reset_history()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for name in _LAZY_BUFFERS:
            saved = state_dict.get(prefix + name)
            buf = getattr(self, name)
            if isinstance(saved, Tensor) and saved.shape != buf.shape:
                buf.resize_(saved.shape)  # in place: DDP keeps references to buffer objects
        absent = [prefix + n for n in _HISTORY_BUFFERS if prefix + n not in state_dict]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if len(absent) == len(_HISTORY_BUFFERS):
            # A BN checkpoint: a CBN model starts with an empty window, nothing is missing.
            for key in absent:
                if key in missing_keys:
                    missing_keys.remove(key)
            for name in _LAZY_BUFFERS:
                getattr(self, name).resize_(0)
            self.reset_history()

    @property
    def window_active(self) -> bool:
        """Whether the current training iteration uses past statistics (after burn-in)."""
        return self.buffer_num > 0 and int(self.num_iters) > self.burnin_iters

    # ---------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        if not self.training and self.running_mean is not None:
            return self._normalize(x, self.running_mean, self.running_var)
        if not self.training:  # eval without running statistics: current batch, no state
            mean, var = self._batch_moments(x)
            return self._normalize(x, mean, var)

        self.num_iters += 1
        if x.numel() == 0:
            mean = self.running_mean if self.running_mean is not None else x.new_zeros(
                self.num_features)
            var = self.running_var if self.running_var is not None else x.new_ones(
                self.num_features)
            return self._normalize(x, mean, var)
        m = x.numel() // x.shape[1]
        if m < 2:
            raise ValueError(f'CBN expects more than 1 value per channel when training, got '
                             f'input of shape {tuple(x.shape)}')

        mean, var = self._batch_moments(x)
        if self.track_running_stats:
            self.num_batches_tracked += 1
            update_running_stats(self.running_mean, mean.detach(), self.momentum,
                                 self.num_batches_tracked)
            update_running_stats(self.running_var, var.detach() * (m / (m - 1)), self.momentum,
                                 self.num_batches_tracked)
        if not self.window_active:
            return self._normalize(x, mean, var)

        weight, grads = self._conv_terms(x)
        if grads is not None:
            self._prepare_history(grads)
        mean_bar, var_bar = self._aggregate(mean, var, weight)
        self._push(mean.detach(), (var + mean * mean).detach(), weight, grads)
        return self._normalize(x, mean_bar, var_bar)

    def _normalize(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        if not self.eps_outside_sqrt and not (mean.requires_grad or var.requires_grad):
            # constants: native BN kernel, which is also what conv-BN folding reproduces
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        return normalize_with_stats(x, mean, var, self.weight, self.bias, self.eps,
                                    self.eps_outside_sqrt)

    def _state_dtype(self) -> torch.dtype:
        return self.hist_mean.dtype

    def _batch_moments(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        # Two-pass variance in (at least) the state precision: bf16 sums would lose exactly the
        # small-batch statistics this layer is about, and E[x²]−E[x]² cancels when |μ| ≫ σ.
        xs = x.to(self._state_dtype()) if x.dtype != self._state_dtype() else x
        var, mean = torch.var_mean(xs, dim=(0, 2, 3), unbiased=False)
        return mean, var

    def _conv_terms(self, x: Tensor) -> Tuple[Optional[Tensor], Optional[Tuple[Tensor, Tensor]]]:
        """The producing conv's weight (C, P) as used, and (∂μ/∂W, ∂ν/∂W) of this batch.

        Returns ``(None, None)`` when nothing can or needs to be compensated.
        """
        origin = find_producing_conv(x)
        if origin is None:
            if x.grad_fn is not None:
                warn_once(
                    f'cbn-no-conv-{type(x.grad_fn).__name__}',
                    f'CBN({self.num_features}): the input was produced by '
                    f'{type(x.grad_fn).__name__}, not by a Conv2d, so past statistics cannot be '
                    'compensated for weight changes; using the uncompensated cross-iteration '
                    'average for such layers.')
            return None, None
        if x.grad_fn.next_functions[1][0] is None or origin.input is None:
            return None, None  # frozen conv weight: past statistics need no compensation
        dtype = self._state_dtype()
        weight = origin.weight.to(dtype)
        c = weight.shape[0]
        if c != self.num_features:
            raise ValueError(f'CBN({self.num_features}) follows a conv with {c} output channels')
        return weight.reshape(c, -1), self._stat_grads(x.detach().to(dtype), origin, dtype)

    @staticmethod
    def _stat_grads(x: Tensor, origin: ConvOrigin, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        z = origin.input.to(dtype)
        n, c, h, w = x.shape
        g = origin.groups
        c_in, kh, kw = origin.weight.shape[1:]
        m = n * h * w
        geometry = (origin.stride, origin.padding, origin.dilation, g)
        # ∂μ_c/∂W[c]: mean patch per group = weight-gradient of a conv with one output channel
        # per group and grad_output 1/M; batch-summed first since grad_output ignores n.
        ones = z.new_full((1, g, h, w), 1.0 / m)
        d_mean = conv2d_weight(z.sum(0, keepdim=True), (g, c_in, kh, kw), ones, *geometry)
        # ∂ν_c/∂W[c] = (2/M) Σ x_c · patch: one weight-gradient conv with grad_output 2x/M.
        d_sq = conv2d_weight(z, (c, c_in, kh, kw), x * (2.0 / m), *geometry)
        return d_mean.reshape(g, -1), d_sq.reshape(c, -1)

    @staticmethod
    def _inner(d_mean: Tensor, d_sq: Tensor, weight: Tensor) -> Tuple[Tensor, Tensor]:
        """Per channel ⟨∂μ/∂W[c], W[c]⟩ and ⟨∂ν/∂W[c], W[c]⟩ without weight-sized temporaries."""
        c, p = weight.shape
        g = d_mean.shape[0]
        mean_proj = torch.bmm(weight.reshape(g, c // g, p), d_mean.reshape(g, p, 1)).reshape(c)
        sq_proj = torch.bmm(d_sq.reshape(c, 1, p), weight.reshape(c, p, 1)).reshape(c)
        return mean_proj, sq_proj

    def _prepare_history(self, grads: Tuple[Tensor, Tensor]) -> None:
        """Size the derivative history for this conv; restart the window if the conv changed."""
        shapes = [(self.buffer_num, ) + tuple(d.shape) for d in grads]
        current = [tuple(getattr(self, name).shape) for name in _LAZY_BUFFERS]
        if current == shapes:
            return
        if self.hist_sqmean_grad.numel():
            warn_once(
                f'cbn-shape-{id(self)}',
                f'CBN({self.num_features}): the producing conv changed from weight shape '
                f'{current[1][1:]} to {shapes[1][1:]}; restarting the cross-iteration window.')
            self.hist_len.zero_()
            self.hist_ptr.zero_()
        # in place, so that references held by DDP stay valid
        for name, shape in zip(_LAZY_BUFFERS, shapes):
            getattr(self, name).resize_(shape).zero_()

    def _aggregate(self, mean: Tensor, var: Tensor,
                   weight: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        n_past = int(self.hist_len)
        if n_past == 0:
            return mean, var
        past_mean = self.hist_mean[:n_past]
        past_sq = self.hist_sqmean[:n_past]
        if weight is not None and self.rho != 0:
            comp_mean, comp_sq = [], []
            for k in range(n_past):
                mean_proj, sq_proj = self._inner(self.hist_mean_grad[k],
                                                 self.hist_sqmean_grad[k], weight)
                comp_mean.append(mean_proj - self.hist_mean_proj[k])
                comp_sq.append(sq_proj - self.hist_sqmean_proj[k])
            past_mean = past_mean + self.rho * torch.stack(comp_mean)
            past_sq = past_sq + self.rho * torch.stack(comp_sq)
        past_var = past_sq - past_mean * past_mean
        valid = (past_var >= 0).to(past_var.dtype)
        count = 1 + valid.sum(0)
        mean_bar = (mean + (valid * past_mean).sum(0)) / count
        spread = var + (mean - mean_bar)**2
        past_spread = valid * (past_var + (past_mean - mean_bar)**2)
        var_bar = (spread + past_spread.sum(0)) / count
        return mean_bar, var_bar

    @torch.no_grad()
    def _push(self, mean: Tensor, sqmean: Tensor, weight: Optional[Tensor],
              grads: Optional[Tuple[Tensor, Tensor]]) -> None:
        slot = int(self.hist_ptr)
        self.hist_mean[slot] = mean
        self.hist_sqmean[slot] = sqmean
        if grads is not None:
            d_mean, d_sq = grads
            self.hist_mean_grad[slot] = d_mean
            self.hist_sqmean_grad[slot] = d_sq
            # computed exactly as the later ⟨D, W_t⟩, so unchanged weights compensate by 0
            mean_proj, sq_proj = self._inner(d_mean, d_sq, weight)
            self.hist_mean_proj[slot] = mean_proj
            self.hist_sqmean_proj[slot] = sq_proj
        else:
            # no conv to compensate this time: a zero derivative keeps the entry as measured
            if self.hist_sqmean_grad.numel():
                self.hist_mean_grad[slot] = 0
                self.hist_sqmean_grad[slot] = 0
            self.hist_mean_proj[slot] = 0
            self.hist_sqmean_proj[slot] = 0
        self.hist_ptr.fill_((slot + 1) % self.buffer_num)
        self.hist_len.fill_(min(int(self.hist_len) + 1, self.buffer_num))

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, buffer_num={self.buffer_num}, '
                f'burnin_iters={self.burnin_iters}, rho={self.rho}, '
                f'eps_outside_sqrt={self.eps_outside_sqrt}')
