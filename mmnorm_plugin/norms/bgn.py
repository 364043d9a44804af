"""Batch Group Normalization (BGN), arXiv 2012.02782.

Zhou et al., "Batch Group Normalization" (2020). No official code was published; this module
follows the method as the abstract states it (statistics over the batch *and* a group of
channels with all their positions, ``G`` groups as in GN, per-channel affine) and keeps BN's
inference behaviour (running statistics), which is what makes it a drop-in for BN.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .functional import check_input_4d

__all__ = ['BGN']


@MODELS.register_module('BGN')
class BGN(_BatchNorm):
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

    Implementation: training runs the native batch-norm kernel on the view
    ``(N, G, C/G * H * W)`` with the per-group running buffers, so statistics, their EMA and
    the backward through them are torch's, then applies the per-channel affine with the native
    kernel in inference mode (mean 0, variance 1, ``eps`` 0). That second call is exactly
    :math:`\hat x \gamma + \beta`, and its native backward yields the input and both parameter
    gradients in one kernel; on CPU it measured faster than an ``addcmul`` affine and than a
    hand-written closed-form backward (``tools/benchmarks/bench_bgn.py``). The grouped
    normalization and the separate affine cost about 1.3-1.5x BN's time and keep one extra
    activation-sized tensor for backward. Eval mode expands the running statistics to
    channels and makes a single native call.

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
          and ``num_batches_tracked`` untouched (it carries no statistics).
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
        self._check_input_dim(x)
        use_batch_stats = self.training or self.running_mean is None
        if x.numel() == 0:
            # Keep weight and bias in the graph so DDP sees them used on a 0-RoI batch.
            return self._affine(x)
        if not use_batch_stats:
            mean, var = self.channel_running_stats()
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)

        momentum = 0.0 if self.momentum is None else self.momentum
        update_stats = self.training and self.track_running_stats
        if update_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        n = x.shape[0]
        grouped = x.reshape(n, self.num_groups, -1)
        normalized = F.batch_norm(
            grouped,
            self.running_mean if update_stats else None,
            self.running_var if update_stats else None,
            None, None, True, momentum, self.eps)
        return self._affine(normalized.view_as(x))

    def _affine(self, x: Tensor) -> Tensor:
        if self.weight is None and self.bias is None:
            return x
        c = self.num_features
        ref = self.weight if self.weight is not None else self.bias
        weight = self.weight if self.weight is not None else ref.new_ones(c)
        bias = self.bias if self.bias is not None else ref.new_zeros(c)
        if x.numel() == 0:
            return x * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
        # Inference-mode BN with mean 0, var 1, eps 0 is exactly x * weight + bias, computed
        # (with its backward) by one fused native kernel.
        return F.batch_norm(x, ref.new_zeros(c), ref.new_ones(c), weight, bias, False, 0.0, 0.0)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        mean_key, var_key = prefix + 'running_mean', prefix + 'running_var'
        if (self.track_running_stats and mean_key in state_dict and var_key in state_dict):
            mean, var = state_dict[mean_key], state_dict[var_key]
            k = mean.numel()
            if (mean.dim() == 1 and var.shape == mean.shape and k != self.num_groups
                    and k % self.num_groups == 0 and self.num_features % k == 0):
                state_dict[mean_key], state_dict[var_key] = pool_group_stats(
                    mean, var, self.num_groups)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


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
