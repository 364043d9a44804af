"""Batch Group Normalization (BGN), arXiv 2012.02782.

Zhou et al., "Batch Group Normalization" (2020). No official code was published; this module
follows the method as the abstract states it (statistics over the batch *and* a group of
channels with all their positions, ``G`` groups as in GN, per-channel affine) and keeps BN's
inference behaviour (running statistics), which is what makes it a drop-in for BN.
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .functional import (GuardedNormMixin, check_input_4d, check_input_dtype, check_nchw,
                         check_values_per_statistic, update_running_stats)

__all__ = ['BGN']


@MODELS.register_module('BGN')
class BGN(GuardedNormMixin, _BatchNorm):
    r"""Batch Group Normalization: BN whose statistics also pool over groups of channels.

    For an input :math:`x \in \mathbb{R}^{N \times C \times H \times W}` the ``C`` channels are
    split into :math:`G` contiguous groups of :math:`C/G` channels (channel :math:`c` is in group
    :math:`g(c) = \lfloor c G / C \rfloor`, GN's grouping). In training, each group has one mean
    and one variance over all its :math:`m = N \cdot (C/G) \cdot H \cdot W` elements:

    .. math::

        \mu_g = \frac{1}{m} \sum_{n,\, c \in g,\, h,\, w} x_{nchw}, \qquad
        \sigma_g^2 = \frac{1}{m} \sum_{n,\, c \in g,\, h,\, w} (x_{nchw} - \mu_g)^2,

        y_{nchw} = \gamma_c \, \frac{x_{nchw} - \mu_{g(c)}}{\sqrt{\sigma_{g(c)}^2 + \epsilon}}
                   + \beta_c .

    :math:`\gamma, \beta` stay per channel (``C`` values each, BN's parameter count). The running
    statistics are per group (``G`` values each) and follow BN's convention,
    :math:`\hat\mu_g \leftarrow (1 - \text{momentum})\,\hat\mu_g + \text{momentum}\,\mu_g` and
    the same for :math:`\hat\sigma_g^2` with the unbiased :math:`\frac{m}{m-1}\sigma_g^2`. In
    eval mode :math:`y = a_c x + b_c` with :math:`a_c = \gamma_c / \sqrt{\hat\sigma^2_{g(c)} +
    \epsilon}`, :math:`b_c = \beta_c - a_c \hat\mu_{g(c)}`: a per-channel affine that folds into
    the preceding convolution exactly like BN.

    Special cases: ``num_groups == num_features`` is BN (equal up to float rounding, as the
    affine is a separate op); ``num_groups == 1`` uses one statistic for the whole tensor.

    Implementation (training): a custom autograd function built from native kernels only
    (see ``_BatchGroupNorm``): ``native_group_norm`` yields per-(sample, group) statistics in
    one fused pass, they are pooled over the batch, and one inference-mode ``batch_norm``
    applies group statistics and the per-channel affine in a single pass; the backward is the
    native per-channel BN backward plus one in-place per-channel affine fix-up that turns its
    per-channel mean terms into group means. It keeps only the input for backward (as BN) and
    measured 0.78-1.00x BN's fwd+bwd time on CPU (``tools/benchmarks/bench_bgn.py``). Eval
    mode expands the running statistics to channels and makes a single native call.

    Args:
        num_features (int): ``C``, the number of channels.
        eps (float): added to the variance. Default 1e-5, BN's (and what
            ``mmcv.cnn.build_norm_layer`` injects anyway); the paper introduces no other.
        momentum (float | None): EMA factor of the running statistics in PyTorch's convention
            (weight of the new batch). Default 0.1, BN's. ``None`` gives a cumulative average,
            as in :class:`torch.nn.BatchNorm2d`.
        affine (bool): learn per-channel :math:`\gamma, \beta`. Default True.
        track_running_stats (bool): keep per-group running statistics and use them in eval
            mode. Default True (BN-foldable inference); False uses batch statistics always.
        num_groups (int): ``G``. Must divide ``num_features`` (ValueError otherwise). Default
            32. The paper treats G as a per-task hyper-parameter and its body (tables with the
            G used per batch size) was not available to us; a third-party implementation says
            the paper suggests G=1 for small batches (unverified). We default to 32 because it
            divides every width in ResNet/ResNeXt (64 ... 2048), FPN and mmdet heads (256); it
            is GN's default grouping of the same convolutions, the known-good detection setting
            for group statistics; and it keeps 32 statistics per layer, so a BN checkpoint
            converted by pooling (see below) keeps far more of its per-channel scales than at
            G=1, where channels with different magnitudes share one variance. Set it
            explicitly in configs.

    Checkpoints: parameter and buffer names are BN's (``weight``, ``bias``, ``running_mean``,
    ``running_var``, ``num_batches_tracked``). Loading finer statistics, i.e. BN's per-channel
    ones (``C`` values) or a BGN's with more groups (``K`` values, ``G | K | C``), pools each
    group's ``K/G`` consecutive entries, which have equal element counts:
    :math:`\mu_g = \operatorname{mean}_k \mu_k`,
    :math:`\sigma^2_g = \operatorname{mean}_k(\sigma_k^2 + \mu_k^2) - \mu_g^2` (the mean and
    variance of the union of the sub-populations), so an ImageNet BN ResNet loads directly.

    Caveats:
        * mmengine's ``sync_bn='torch'`` (and ``nn.SyncBatchNorm.convert_sync_batchnorm``)
          replace every ``_BatchNorm`` subclass, this one included, by ``nn.SyncBatchNorm``
          with ``C`` per-channel statistics: the method would be silently lost. Do not combine
          them; statistics are per device, as in the paper.
        * Subclassing ``_BatchNorm`` is deliberate: mmdet's ``norm_eval``, mmengine's
          ``norm_decay_mult`` and ``is_norm`` recognise the layer.
        * An empty batch (0 RoIs) returns an empty output and leaves the running statistics
          and ``num_batches_tracked`` untouched (it carries no statistics). A group statistic
          of a single value in training (``N * C/G * H * W == 1``) raises ValueError, as
          ``nn.BatchNorm2d`` does: it would output the bias with a zero gradient.
        * Mixed precision: under ``torch.autocast`` (bfloat16 on CPU, float16 on CUDA) the
          input is low precision while the parameters and statistics stay float32; the
          statistics are computed from a float32 view of the input and the native kernels get
          float32 statistics (they accept that mix). A float64 input into a float32 layer
          raises.
        * A non-finite batch statistic never enters the running statistics (those groups keep
          their values; counted in ``nonfinite_count``, logged once). A checkpoint that does
          not fit raises before anything is modified.
        * ``torch.jit.script`` compiles the eval-mode layer with running statistics (one
          ``batch_norm``); training (a custom autograd function) is refused by the scripted
          module. No host synchronisation in a training step.
    """

    _abbr_ = 'bn'

    def __init__(self,
                 num_features: int,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1,
                 affine: bool = True,
                 track_running_stats: bool = True,
                 num_groups: int = 32,
                 device=None,
                 dtype=None) -> None:
        if not isinstance(num_groups, int) or isinstance(num_groups, bool) or num_groups < 1:
            raise ValueError(f'BGN: num_groups must be a positive int, got {num_groups!r}')
        if num_features % num_groups != 0:
            raise ValueError(f'BGN: num_groups={num_groups} does not divide '
                             f'num_features={num_features}; choose a divisor of '
                             f'{num_features} (e.g. {_closest_divisor(num_features, num_groups)})')
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.num_groups = num_groups
        if track_running_stats:
            # Re-register with G entries; the names stay BN's so checkpoints line up.
            factory_kwargs = dict(device=device, dtype=dtype)
            self.register_buffer('running_mean', torch.zeros(num_groups, **factory_kwargs))
            self.register_buffer('running_var', torch.ones(num_groups, **factory_kwargs))
        self._init_guard()

    def _check_input_dim(self, input: Tensor) -> None:
        check_input_4d(self, input)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, num_groups={self.num_groups}'

    def channel_running_stats(self) -> Tuple[Tensor, Tensor]:
        """The running mean and variance expanded to ``C`` per-channel values.

        This is the BN-equivalent state used at inference, e.g. to fold the layer into a conv.
        """
        if self.running_mean is None:
            raise RuntimeError('BGN(track_running_stats=False) has no running statistics')
        per_group = self.num_features // self.num_groups
        return (self.running_mean.repeat_interleave(per_group),
                self.running_var.repeat_interleave(per_group))

    def forward(self, x: Tensor) -> Tensor:
        check_nchw(x, self.num_features, self._layer_name)
        if x.numel() == 0:
            # Keep weight and bias in the graph so DDP sees them used on a 0-RoI batch.
            return _empty_affine(x, self.weight, self.bias)
        if not self.training and self.running_mean is not None:
            mean, var = self.channel_running_stats()
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        return self._forward_batch_stats(x)

    @torch.jit.unused
    def _forward_batch_stats(self, x: Tensor) -> Tensor:
        state = self.weight if self.weight is not None else self.running_mean
        if state is not None:
            check_input_dtype(x, state.dtype, self._layer_name)
        m = x.numel() // self.num_groups
        if self.training:
            check_values_per_statistic(m, self._layer_name, list(x.shape))
        y, mean, var = _BatchGroupNorm.apply(x, self.weight, self.bias, self.num_groups,
                                             self.eps)
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            t = self.num_batches_tracked  # 1/t on the device if momentum is None
            finite = update_running_stats(self.running_mean, mean, self.momentum, t)
            finite &= update_running_stats(self.running_var, var * (m / max(m - 1, 1)),
                                           self.momentum, t)
            self._note_nonfinite(finite)
        return y

    def _adapt_state(self, state: Dict[str, Any],
                     notes: List[Tuple[str, str]]) -> Dict[str, Any]:
        mean, var = state.get('running_mean'), state.get('running_var')
        if self.track_running_stats and isinstance(mean, Tensor) and isinstance(var, Tensor):
            k = mean.numel()
            if (mean.dim() == 1 and var.shape == mean.shape and k != self.num_groups
                    and k % self.num_groups == 0 and self.num_features % k == 0):
                state['running_mean'], state['running_var'] = pool_group_stats(
                    mean, var, self.num_groups)
        return state


class _BatchGroupNorm(torch.autograd.Function):
    """Training-mode BGN in two native kernels forward and one (+ a fix-up pass) backward.

    Forward: ``native_group_norm`` gives per-(sample, group) means and variances in one fused
    pass; they are pooled over the batch (parallel-variance formula, no E[x²] - E[x]²
    cancellation); one inference-mode ``batch_norm`` then applies the group statistics and the
    per-channel affine in a single pass. Backward: the native per-channel BN backward with the
    group statistics expanded to channels gives ``dgamma = Σ g·x̂`` and ``dbeta = Σ g`` exactly,
    and a ``dx`` whose mean and projection terms are per channel; the true terms are group
    means of ``gamma * (...)``, and their difference is an affine function of ``x`` per channel,
    added in place. Measured faster than the composite of autograd-tracked native calls
    (``tools/benchmarks/bench_bgn.py``).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                num_groups: int, eps: float):
        x = x.contiguous()
        n, c = x.shape[:2]
        hw = x.numel() // (n * c)
        # Statistics in float32 at least: under autocast the kernel would return
        # bfloat16/float16 moments (8/11-bit mantissas), so it reads a float32 copy.
        xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        # eps=0: exact per-sample variances (1/rstd^2), eps is added once to the pooled value
        _, mean_ng, rstd_ng = torch.ops.aten.native_group_norm(xs, None, None, n, c, hw,
                                                               num_groups, 0.0)
        del xs
        mean = mean_ng.mean(0)
        var = rstd_ng.pow(-2).mean(0) + (mean_ng - mean).pow(2).mean(0)
        per_group = c // num_groups
        # The native kernels take statistics in the parameters' dtype: the input's own, or
        # float32 with a low-precision input (autocast).
        p_dtype = weight.dtype if weight is not None else mean.dtype
        mean_c = mean.repeat_interleave(per_group)
        var_c = var.repeat_interleave(per_group)
        invstd_c = (var_c + eps).rsqrt()
        mean_c, var_c, invstd_c = (t.to(p_dtype) for t in (mean_c, var_c, invstd_c))
        y = F.batch_norm(x, mean_c, var_c, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(x, weight, mean_c, invstd_c)
        ctx.num_groups = num_groups
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_mean, _grad_var):
        x, weight, mean_c, invstd_c = ctx.saved_tensors
        c = x.shape[1]
        g = ctx.num_groups
        grad_out = grad_out.contiguous()
        gamma = weight if weight is not None else mean_c.new_ones(c)
        dx, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, gamma, None, None, mean_c, invstd_c, True, 0.0, [True, True, True])
        m_c = x.numel() // c
        dgamma_f, dbeta_f = dgamma.to(invstd_c.dtype), dbeta.to(invstd_c.dtype)
        gamma_f = gamma.to(invstd_c.dtype)
        # mean over the channel's elements (what the per-channel backward subtracted) versus
        # mean over the group's elements (what BGN needs), of gamma*g and gamma*g*x_hat
        own_mean = gamma_f * dbeta_f / m_c
        own_proj = gamma_f * dgamma_f / m_c
        group_mean = own_mean.view(g, -1).mean(1).repeat_interleave(c // g)
        group_proj = own_proj.view(g, -1).mean(1).repeat_interleave(c // g)
        p = invstd_c * (own_mean - group_mean)
        q = invstd_c * (own_proj - group_proj)
        slope = q * invstd_c  # x_hat = (x - mean) * invstd
        offset = p - slope * mean_c
        dx.addcmul_(x, slope.to(x.dtype).view(1, -1, 1, 1)).add_(
            offset.to(x.dtype).view(1, -1, 1, 1))
        return (dx, dgamma if weight is not None else None,
                dbeta if ctx.has_bias else None, None, None)


def _empty_affine(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
    if weight is not None:
        x = x * weight.view(1, -1, 1, 1)
    if bias is not None:
        x = x + bias.view(1, -1, 1, 1)
    return x


def pool_group_stats(mean: Tensor, var: Tensor, num_groups: int) -> Tuple[Tensor, Tensor]:
    """Pool ``K`` equal-sized sub-population statistics into ``num_groups`` consecutive groups.

    Mean and variance of each union: ``mu_g = mean_k mu_k`` and
    ``var_g = mean_k(var_k + mu_k^2) - mu_g^2``, computed in float64 and returned in the
    input dtype. ``K`` must be a multiple of ``num_groups``.
    """
    k = mean.numel()
    if k % num_groups != 0:
        raise ValueError(f'cannot pool {k} statistics into {num_groups} groups')
    m = mean.double().view(num_groups, k // num_groups)
    v = var.double().view(num_groups, k // num_groups)
    pooled_mean = m.mean(dim=1)
    pooled_var = (v + m * m).mean(dim=1) - pooled_mean * pooled_mean
    # Float rounding can leave a tiny negative for constant sub-populations.
    pooled_var = pooled_var.clamp_(min=0)
    return pooled_mean.to(mean.dtype), pooled_var.to(var.dtype)


def _closest_divisor(n: int, g: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0] or [1]
    return min(divisors, key=lambda d: (abs(d - g), -d))
