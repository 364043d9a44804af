"""Batch Group Normalization (BGN), arXiv 2012.02782.

Zhou et al., "Batch Group Normalization" (2020). No official code was published; this module
follows the method as the abstract states it (statistics over the batch *and* a group of
channels with all their positions, ``G`` groups as in GN, per-channel affine) and keeps BN's
inference behaviour (running statistics), which is what makes it a drop-in for BN.
"""
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .base import NormBase
from .collectives import all_reduce_moments, all_reduce_sum, training_sync_group
from .conversion import convert_norm, synced_variant_of
from .input_checks import check_input_4d, check_nchw

__all__ = ['BGN', 'SyncBGN']


@MODELS.register_module('BGN')
class BGN(NormBase):
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
    per-channel mean terms into group means. It keeps only the input for backward (as BN); its
    cost against BN is measured by ``tools/benchmarks/bench_bgn.py`` (``configs/bgn/README.md``,
    "Cost"). Eval mode expands the running statistics to channels and makes a single native
    call.

    Args:
        num_features (int): ``C`` from an expected input of size ``(N, C, H, W)``.
        eps (float): added to the variance, for numerical stability. Default: 1e-5 (BN's, and
            what ``mmcv.cnn.build_norm_layer`` injects; the paper introduces no other).
        momentum (float, optional): weight of the new batch in the running statistics' EMA
            (PyTorch's convention); ``None`` for a cumulative average. Default: 0.1 (BN's).
        affine (bool): learn per-channel :math:`\gamma, \beta`. Default: ``True``.
        track_running_stats (bool): keep per-group running statistics and normalize with them
            in eval mode (BN-foldable inference); ``False`` uses batch statistics always.
            Default: ``True``.
        num_groups (int): ``G``; must divide ``num_features`` (ValueError otherwise).
            Default: 32. The paper treats ``G`` as a per-task hyper-parameter and no official
            value exists; 32 divides every width of ResNet/ResNeXt, FPN and mmdet's heads, is
            GN's grouping of the same convolutions, and keeps 32 statistics per layer, so a BN
            checkpoint converted by pooling (see below) keeps far more of its per-channel
            scales than ``G = 1``. ``G = 1`` (a third-party reading of the paper for small
            batches) is not better on the studies (``configs/bgn/README.md``,
            ``docs/norm_sweep_defaults_photo-digits_finetune.md``); set it explicitly in configs.

    Checkpoints: parameter and buffer names are BN's (``weight``, ``bias``, ``running_mean``,
    ``running_var``, ``num_batches_tracked``). Loading finer statistics, i.e. BN's per-channel
    ones (``C`` values) or a BGN's with more groups (``K`` values, ``G | K | C``), pools each
    group's ``K/G`` consecutive entries, which have equal element counts:
    :math:`\mu_g = \operatorname{mean}_k \mu_k`,
    :math:`\sigma^2_g = \operatorname{mean}_k(\sigma_k^2 + \mu_k^2) - \mu_g^2` (the mean and
    variance of the union of the sub-populations), so an ImageNet BN ResNet loads directly.

    Caveats:
        * Statistics are per device, as in the paper. :class:`SyncBGN` pools the group
          statistics over processes; mmengine's ``sync_bn='torch'`` converts BGN into it once
          the plugin is imported (:mod:`mmnorm_plugin.distributed.sync_bn`).
          ``nn.SyncBatchNorm.convert_sync_batchnorm`` called directly is not guarded: it
          replaces every ``_BatchNorm`` subclass, this one included, by ``C`` per-channel
          statistics, and the method is lost.
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
          ``batch_norm``; an empty eval input returns an empty output); training (a custom
          autograd function) is refused by the scripted module. No host synchronisation in a
          training step.

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)

    Examples::

        >>> bgn = BGN(64, num_groups=32)
        >>> bgn(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
        >>> bgn.running_mean.shape  # one statistic per group
        torch.Size([32])
        >>> # in an mmdet config: norm_cfg = dict(type='BGN', num_groups=32)
    """

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
        self._finish_init()

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
        if x.numel() == 0 and not self.training:
            # Keep weight and bias in the graph so DDP sees them used on a 0-RoI batch.
            return _empty_affine(x, self.weight, self.bias)
        if not self.training and self.running_mean is not None:
            mean, var = self.channel_running_stats()
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        return self._forward_batch_stats(x)

    @torch.jit.unused
    def _sync_group(self) -> Optional[Any]:
        """The process group this forward pools its statistics over; None: this process's.

        BGN: never (statistics per process, as in the paper); :class:`SyncBGN` overrides it.
        """
        return None

    @torch.jit.unused
    def _forward_batch_stats(self, x: Tensor) -> Tensor:
        group = self._sync_group()
        if x.numel() == 0 and group is None:
            # An empty batch carries no statistics. (A synced layer still takes part in the
            # collectives with a count of 0, or the other ranks would wait for it.)
            return _empty_affine(x, self.weight, self.bias)
        m = x.numel() // self.num_groups
        # synced: the global count is not known on the host without a device sync, so the
        # single-value check only applies to the unsynced layer
        self._check_batch(x, m if group is None else -1)
        y, mean, var, total = _BatchGroupNorm.apply(x, self.weight, self.bias, self.num_groups,
                                                    self.eps, group)
        if self.training and self.track_running_stats:
            if total is None:
                bessel = m / max(m - 1, 1)
                present = None
            else:
                # Global element count per group, a tensor (no host sync); 0 only when every
                # rank's batch was empty: then nothing is counted or updated.
                present = (total > 0).view(())
                bessel = total / (total - 1).clamp_min(1)
            self._update_running_stats(mean, var * bessel, present)
        return y

    def eval_statistics(self) -> Tuple[Tensor, Tensor]:
        if self.running_mean is None:
            return super().eval_statistics()  # raises: no running statistics
        return self.channel_running_stats()

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


@MODELS.register_module('SyncBGN')
@synced_variant_of(BGN)
class SyncBGN(BGN):
    r"""BGN whose training statistics pool every rank's batch (cross-process synced BGN).

    In training inside a process group of more than one rank, each group's mean and variance
    are those of the union of all ranks' images: the layer is BGN applied to the concatenation
    of the ranks' batches (forward output, input gradient, and, summed over ranks as DDP does,
    the ``weight``/``bias`` gradients; running statistics identical on every rank). What is
    synced is ``G`` group statistics, not ``C`` channel statistics: far fewer numbers than
    :class:`torch.nn.SyncBatchNorm` moves.

    Communication per layer per training iteration (two blocking collectives, like
    ``nn.SyncBatchNorm``):

    * forward: one ``all_reduce`` of ``2G + 1`` float64 numbers (count, ``m·μ``,
      ``m·(σ² + μ²)`` per group; float64 so the raw second moment does not cancel), i.e.
      ``(2G + 1) · 8`` bytes;
    * backward: one ``all_reduce`` of ``2G`` numbers in the parameters' dtype
      (:math:`\sum_{c \in g} \gamma_c\, \partial\beta_c` and
      :math:`\sum_{c \in g} \gamma_c\, \partial\gamma_c`), i.e. ``2G · 4`` bytes in
      float32.

    ``nn.SyncBatchNorm`` instead all-gathers ``world · (2C + 1)`` float32 numbers in the
    forward and all-reduces ``2C`` float32 in the backward. E.g. ``G = 32``, ``C = 256``,
    8 ranks: SyncBGN 520 + 256 = 776 bytes per layer per iteration, SyncBN 16 416 + 2 048 =
    18 464 bytes (24x). (Sizes are the collectives' buffers; on the wire a ring all-reduce
    moves about twice its buffer per rank, an all-gather its output.) Messages this small are
    latency-bound, so the saving is in bandwidth, not in the number of round trips.

    Args:
        process_group (optional): the ranks to pool over (a ``torch.distributed`` group).
            Default: ``None``, the whole world, as for ``nn.SyncBatchNorm``.
        Every other argument is :class:`BGN`'s, with its default.

    Shape:
        - Input: :math:`(N, C, H, W)`; ``N`` may differ between ranks, and be 0.
        - Output: :math:`(N, C, H, W)` (same shape as input).

    Examples::

        >>> # in an mmdet config: norm_cfg = dict(type='SyncBGN', num_groups=32), or BGN and
        >>> # mmengine's sync_bn='torch'
        >>> layer = SyncBGN.from_unsynced(BGN(64, num_groups=32))
        >>> layer(torch.randn(2, 64, 4, 4)).shape  # outside a process group: BGN exactly
        torch.Size([2, 64, 4, 4])

    Behaviour:
        * Outside a process group, or in a group of one rank, it is BGN exactly (the same
          code path, no collective). Eval mode uses the running statistics and never
          communicates (eval without running statistics uses the local batch, as
          ``nn.SyncBatchNorm`` does). An eval-mode layer compiles with ``torch.jit.script``
          like BGN.
        * Unequal batches are weighted by their element counts. A rank with an empty input
          (0 images or RoIs) still takes part in both collectives with a count of 0, so the
          others do not hang; its output is empty and its ``weight``/``bias`` gradients are 0.
          When every rank is empty the state is left alone, as BGN's for an empty batch.
        * Every rank must run the backward of every synced forward: a rank whose output does
          not reach its loss (or that skips ``backward``) leaves the others waiting in the
          backward all-reduce for ever, as with ``nn.SyncBatchNorm``.
        * The single-value check of BGN (one value per group statistic raises ValueError)
          applies only outside a group: the global count is a device tensor, and reading it
          on the host would be a sync per layer. With one value in the whole group the output
          is the bias (zero gradient) and the running variance is pulled toward 0.
        * No host synchronisation in a training step: counts are tensors, the unbiased
          running variance uses :math:`M/(M-1)` with the global count :math:`M` on the
          device.
        * Parameter and buffer names and shapes are BGN's: BGN and SyncBGN checkpoints load
          into each other. :meth:`from_unsynced` / :meth:`to_unsynced` convert a module.
        * ``nn.SyncBatchNorm.convert_sync_batchnorm`` called directly replaces every
          ``_BatchNorm``, this layer included; mmengine's ``sync_bn`` keeps it (guarded).
    """

    def __init__(self, num_features: int, *args, process_group: Optional[Any] = None,
                 **kwargs) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.process_group = process_group

    @torch.jit.unused
    def _sync_group(self) -> Optional[Any]:
        return training_sync_group(self)

    @classmethod
    def from_unsynced(cls, module: BGN, process_group: Optional[Any] = None) -> 'SyncBGN':
        """A SyncBGN with ``module``'s hyper-parameters, state and training mode.

        Like ``nn.SyncBatchNorm.convert_sync_batchnorm``, the new layer holds ``module``'s own
        parameter and buffer objects (same device, dtype and ``requires_grad``; an optimizer
        built on ``module`` keeps working): replace ``module`` by the result rather than
        using both.
        """
        return convert_norm(module, cls, BGN, process_group=process_group)

    def to_unsynced(self) -> BGN:
        """The reverse of :meth:`from_unsynced`: a BGN holding this layer's parameter and
        buffer objects, in its training mode."""
        return convert_norm(self, BGN, BGN)


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

    Synced (``group`` not None, :class:`SyncBGN` in a process group): the local per-group
    (count, mean, variance) are pooled by one :func:`all_reduce_moments` (``2G + 1`` float64
    numbers) before normalizing, and the backward's group sums ``S1_g = Σ_{c∈g} γ_c dβ_c``,
    ``S2_g = Σ_{c∈g} γ_c dγ_c`` by one :func:`all_reduce_sum` (``2G`` numbers in the
    parameters' dtype); the group means are then ``S/M_g`` with the global count ``M_g``:
    ``dx = invstd_g (γ_c g − S1_g/M_g − x̂ S2_g/M_g)``. ``dgamma``/``dbeta`` stay this rank's
    sums (DDP reduces them, as for ``nn.SyncBatchNorm``). An empty local batch takes part in
    both collectives with a count of 0. Unsynced, ``S/M_g`` is the same expression with the
    local sums and count and no collective.

    Returns ``(y, mean, var, total)``: the group statistics used (global when synced) and the
    global element count per group as a ``(1,)`` tensor when synced, else None.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                num_groups: int, eps: float, group: Any = None):
        x = x.contiguous()
        n, c = x.shape[:2]
        hw = math.prod(x.shape[2:])
        per_group = c // num_groups
        m_local = n * per_group * hw  # this rank's elements per group (a Python int)
        # Statistics in float32 at least: under autocast the kernel would return
        # bfloat16/float16 moments (8/11-bit mantissas), so it reads a float32 copy.
        xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if m_local > 0:
            # eps=0: exact per-sample variances (1/rstd^2), eps is added once to the pooled
            # value
            _, mean_ng, rstd_ng = torch.ops.aten.native_group_norm(xs, None, None, n, c, hw,
                                                                   num_groups, 0.0)
            mean = mean_ng.mean(0)
            var = rstd_ng.pow(-2).mean(0) + (mean_ng - mean).pow(2).mean(0)
        else:  # only reached synced: an empty rank contributes count 0 (moments ignored)
            mean = xs.new_zeros(num_groups)
            var = xs.new_zeros(num_groups)
        del xs
        total = None
        if group is not None:
            count = torch.full((1, ), float(m_local), dtype=torch.float64, device=x.device)
            total, mean, var = all_reduce_moments(count, mean, var, group)
        # The native kernels take statistics in the parameters' dtype: the input's own, or
        # float32 with a low-precision input (autocast).
        p_dtype = weight.dtype if weight is not None else mean.dtype
        mean_c = mean.repeat_interleave(per_group)
        var_c = var.repeat_interleave(per_group)
        invstd_c = (var_c + eps).rsqrt()
        mean_c, var_c, invstd_c = (t.to(p_dtype) for t in (mean_c, var_c, invstd_c))
        y = F.batch_norm(x, mean_c, var_c, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(x, weight, mean_c, invstd_c, total)
        ctx.num_groups = num_groups
        ctx.has_bias = bias is not None
        ctx.group = group
        ctx.mark_non_differentiable(*(t for t in (mean, var, total) if t is not None))
        return y, mean, var, total

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_mean, _grad_var, _grad_total):
        x, weight, mean_c, invstd_c, total = ctx.saved_tensors
        c = x.shape[1]
        g = ctx.num_groups
        per_group = c // g
        m_c = x.numel() // c  # this rank's elements per channel
        gamma = weight if weight is not None else mean_c.new_ones(c)
        if m_c > 0:
            dx, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
                grad_out.contiguous(), x, gamma, None, None, mean_c, invstd_c, True, 0.0,
                [True, True, True])
        else:  # an empty rank of a synced layer (the native kernel divides by the count)
            dx = torch.zeros_like(x)
            dgamma = gamma.new_zeros(c)
            dbeta = gamma.new_zeros(c)
        f = invstd_c.dtype
        gamma_f = gamma.to(f)
        # gamma * (Σ g, Σ g·x_hat) per channel; per group, summed (over ranks when synced),
        # they give the group means of gamma*g and gamma*g*x_hat that BGN's dx subtracts
        terms = torch.stack((gamma_f * dbeta.to(f), gamma_f * dgamma.to(f)))
        sums = terms.view(2, g, per_group).sum(2)
        if ctx.group is not None:
            all_reduce_sum(sums, ctx.group)
            group_terms = sums / total.to(f)
        else:
            group_terms = sums / (m_c * per_group)
        if m_c > 0:
            # minus what the per-channel backward subtracted (means over the channel's
            # elements), plus the group means
            own = terms / m_c
            p, q = (invstd_c * (own - group_terms.repeat_interleave(per_group, dim=1))).unbind(0)
            slope = q * invstd_c  # x_hat = (x - mean) * invstd
            offset = p - slope * mean_c
            dx.addcmul_(x, slope.to(x.dtype).view(1, -1, 1, 1)).add_(
                offset.to(x.dtype).view(1, -1, 1, 1))
        return (dx, dgamma if weight is not None else None,
                dbeta if ctx.has_bias else None, None, None, None, None)


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
