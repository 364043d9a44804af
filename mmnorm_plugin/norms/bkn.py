r"""Batch Kalman Normalization (BKN), arXiv 1802.03133.

Wang, Peng, Luo, Wang, Lin, "Batch Kalman Normalization: Towards Training Deep Neural Networks
with Micro-Batches" (NeurIPS 2018 version: "Kalman Normalization"). Official code (TensorFlow,
CIFAR only): ``wanggrun/Kalman-Normalization`` ``KalmanNorm/kalman_norm.py``.

Method
------
A BN layer estimates per-channel statistics of its input ``x = conv_k(a_{k-1})`` from the
current (micro-)batch only. BKN treats the stack of layers as one system: the estimated
statistics of layer ``k-1`` are propagated through the transition (ReLU, then the conv that
produced ``x``) to a *prediction* :math:`(\hat\mu_k, \hat\sigma^2_k)`, which is fused with the
observed batch statistics :math:`(\mu_k, \sigma^2_k)` with a fixed gain ``p`` (``prior_weight``)
as the first two moments of a two-component mixture:

.. math::

    \tilde\mu_k = p\,\hat\mu_k + (1-p)\,\mu_k, \qquad
    \tilde\sigma^2_k = p\,\hat\sigma^2_k + (1-p)\,\sigma^2_k + p(1-p)\,(\mu_k - \hat\mu_k)^2,

    y = \gamma\,(x - \tilde\mu_k) / \sqrt{\tilde\sigma^2_k + \epsilon} + \beta .

:math:`(\tilde\mu_k, \tilde\sigma^2_k)` is the state handed to the next layer. Gradients flow
through the prediction (prior statistics, conv weight), as in the official code. Gate (official):
if :math:`\mathrm{mean}_c(\hat\sigma^2_k / \sigma^2_k) \ge` ``gate_ratio`` (100) the prediction is
considered broken and the layer uses :math:`(\mu_k, \sigma^2_k)` (note it is one-sided: a
prediction that is far too *small* is still fused). A layer with no predecessor is plain BN.
Running statistics are an EMA of the fused statistics (the batch part of the variance with
Bessel's correction, like ``torch.nn.BatchNorm2d``), so inference is plain BN and foldable.

Paper vs. official code (what is the default here)
---------------------------------------------------
* The paper's transition uses a gain derived from covariances; the official code uses the
  constant ``p`` and per-channel variances only. We implement the official fusion (the paper's
  equations were not available to verify).
* **Prior** (``prior_mode``). Official (``'sample'``): draw ONE synthetic map
  ``ReLU(m + sqrt(v) * xi)`` of the conv input's size, run it through the same conv, take its
  spatial moments. Default ``'closed_form'``: the expectation that sampling estimates,
  computed exactly (:func:`~mmnorm_plugin.norms.bkn_prior.predict_conv_moments`): two small
  GEMMs over the weight per layer, independent of the image size, deterministic
  (resume-exact), and without sampling noise on top of the micro-batch noise the method is
  meant to remove. The paper describes the prior as the moments of the propagated
  distribution; the sample is only the official estimator of it.
* **What is propagated** (``prior_input``). Official (``'estimated'``): the previous
  layer's fused statistics of its *input*, i.e. the distribution ``N(mu~, sigma~^2)`` before
  that layer's normalization and affine, as if the signal were not normalized. This is what
  makes the estimate depend on all preceding layers (the paper's claim), but its scale differs
  from the tensor the conv actually reads; the gate catches only a prior far too large.
  ``'normalized'`` (default): propagate the estimated distribution of the previous layer's
  *output*, ``N(beta, gamma^2 sigma~^2/(sigma~^2+eps))``, i.e. the tensor the conv reads; the
  prior then depends only on upstream affine parameters and conv weights (a
  normalization-propagation style prior). In post-activation networks (every mmdet detector)
  ``'estimated'`` mis-scales the prior by several times the batch variance, and it trains
  worse on the small-batch study and in detection (``configs/bkn/README.md``,
  ``docs/norm_sweep_defaults_photo-digits_scratch.md``,
  ``docs/norm_sweep_defaults_tiny-coco-hard_scratch.md``,
  ``docs/norm_sweep_defaults_photo-digits_finetune.md``). ``'estimated'`` remains available as
  the official behaviour.

How the chain of layers is found: see :mod:`mmnorm_plugin.norms.bkn_prior` (the state each BKN
attaches to its output's autograd node, the walk from a conv's input back to it, and its replay
under ``torch.compile``).

Requirements and caveats
------------------------
* Chaining needs autograd: in training mode under ``torch.no_grad`` (or with reentrant
  activation checkpointing, ``with_cp=True``, whose first forward runs without a graph) BKN
  runs as plain BN and warns once; the recomputed forward would then differ, so do not use
  ``with_cp`` with BKN. TorchScript does not expose ``grad_fn``.
* ``torch.compile`` cannot read ``grad_fn`` either. Every eager training forward records, per
  layer, how its conv input derives from earlier BKN outputs (the chain of ReLU, sums and
  upsamplings found by the walk); a compiled forward replays that chain on the states the
  earlier layers published in the same forward, and finds the conv through the hooks of
  :func:`~.conv_origin.tap_convolutions`. So: tap the convs, train one eager step, then compile
  (``fullgraph=True`` traces BKN without a break and trains as eager does). The chain is the
  model's structure; a forward whose chain differs from the recorded one (another branch of a
  dynamic model) would replay the recorded one.
* ``norm_eval=True`` (mmdet's default for the backbone) puts BKN in eval mode like BN: running
  statistics only, no fusion. The configs set ``norm_eval=False``.
* For batch statistics over every GPU's images use :class:`SyncBKN`
  (``norm_cfg=dict(type='SyncBKN')``, or mmengine's ``sync_bn='torch'``, which converts BKN into
  it once the plugin is imported): exactly BKN on the concatenated batch, one small all-reduce
  per layer in forward and backward. ``nn.SyncBatchNorm.convert_sync_batchnorm`` called
  directly is not guarded and would replace BKN by plain SyncBN.
* The official code splits a batch of 128 into micro-batches of 2 (``split_num``) to simulate
  small batches on CIFAR; in detection the per-GPU batch is the micro-batch, so there is no
  split here.
* A conv whose bias is frozen (not reachable through autograd) cannot be propagated: the layer
  falls back to BN and warns once. mmdet's convs before norms have no bias.
* One value per channel in training (batch 1 with a 1x1 map, a single RoI) raises ValueError as
  ``nn.BatchNorm2d`` does (the batch variance is 0: the output would be the bias with a zero
  gradient and the running variance pulled toward 0). A float64 input into a float32 layer
  raises; float16/bfloat16 inputs (autocast) are normalized with float32 statistics.
* Non-finite statistics (a NaN/Inf batch) never enter the running statistics (counted in
  ``nonfinite_count``, logged once); a checkpoint that does not fit raises before anything is
  modified. No host synchronisation in a training step.
* ``torch.jit.script`` compiles the eval-mode layer (plain BN); the training step needs autograd
  graph introspection and is refused by the scripted module.
"""
import math
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .base import NormBase, write_state
from .bkn_prior import (STATE_KEY, GaussianState, predict_conv_moments, replay_chain,
                        sample_conv_moments, walk_chain)
from .collectives import all_reduce_moments, all_reduce_sum, training_sync_group
from .conv_origin import producing_conv
from .conversion import convert_norm, synced_variant_of
from .input_checks import check_input_4d, check_nchw
from .reporting import warn_once
from .statistics import batch_moments

__all__ = ['BKN', 'SyncBKN', 'NO_PRIOR', 'FUSED', 'GATED']

# Prior status codes in the ``prior_status`` buffer (diagnostics, not persisted).
NO_PRIOR, FUSED, GATED = 0, 1, 2


class _KalmanNormFunction(torch.autograd.Function):
    r"""Training-mode BKN: batch moments, fusion with the prior, normalization, in native kernels.

    Forward: :func:`~.statistics.batch_moments` for the batch moments :math:`(\mu, \sigma^2)`,
    the per-channel fusion (module docstring) and one inference-mode ``batch_norm`` with the
    fused statistics.
    Outputs ``y`` and the fused ``(mean, var)`` (differentiable: the next layer's prior is built
    from them), plus the running-variance target, the status and the global count per
    statistic (synced; None unsynced) (not differentiable).

    Backward: the native training-mode BN backward with the fused statistics in place of the
    batch ones gives ``dgamma``, ``dbeta`` and the ``dx`` of BN. The true ``dx`` differs from it
    by a per-channel affine function of ``x`` (the mean and variance that ``x`` feeds are the
    batch moments, which enter the fused ones with gains ``1-p`` and ``2p(1-p)(\mu-\hat\mu)``,
    and the fused statistics also receive gradients from the next layer's prior), added in
    place; a layer without prior whose statistics nobody downstream uses needs no fix-up, i.e.
    costs exactly BN. The gate is a tensor condition (no host sync).

    Synced (``group`` not None, :class:`SyncBKN`): the batch moments are those of every rank's
    batch together, ``(N, mu, sigma^2)`` from one :func:`~.collectives.all_reduce_moments` of the
    local ``(n_r, mean, var)``; the fusion, gate and running-variance target (Bessel
    ``N/(N-1)``, a tensor) are then computed from them unchanged. Backward: every gradient
    w.r.t. the batch moments is a sum over ranks of local contributions that are linear in
    local quantities (``dbeta``, ``dgamma`` and the gradients arriving at the fused statistics
    from the next layer's prior, taken with this rank's gains), so one
    :func:`~.collectives.all_reduce_sum` of the packed ``(d_mean, d_var)`` (``2C`` numbers) gives
    :math:`\partial L/\partial\mu` and :math:`\partial L/\partial\sigma^2`, and the true
    :math:`dx = \gamma\,\mathrm{invstd}\,g + d_{mean}/N + 2(x-\mu)\,d_{var}/N` differs from
    the native backward (which used the local count ``n_r``) by a per-channel affine function
    of ``x`` again. The gradients of the prior, ``dgamma`` and ``dbeta`` stay this rank's
    contributions (DDP reduces parameter gradients; the prior's flow into the previous layer's
    fused statistics, which that layer all-reduces). A layer without prior always reduces (it
    is SyncBN). A rank with an empty batch passes count 0 and takes part in both collectives;
    when every rank is empty the batch moments are the placeholders (0, 1) (the caller checks
    ``total > 0`` and leaves its state alone) and every gradient is 0.
    ``group=None`` is the unsynced function, unchanged and free of collectives.
    """

    @staticmethod
    def forward(ctx, x: Tensor, prior_mean: Optional[Tensor], prior_var: Optional[Tensor],
                weight: Optional[Tensor], bias: Optional[Tensor], p: float,
                gate_ratio: Optional[float], eps: float, group: Optional[Any] = None):
        ctx.set_materialize_grads(False)
        n = x.numel() // x.shape[1]
        total = None  # the global count per statistic (synced only)
        if group is None:
            var, mean = batch_moments(x)
            bessel = n / (n - 1) if n > 1 else 1.0
        else:
            if n > 0:
                var, mean = batch_moments(x)
            else:  # an empty rank: count 0, its moments are ignored by the pooling
                mean = var = x.new_zeros(x.shape[1],
                                         dtype=torch.promote_types(x.dtype, torch.float32))
            count = torch.full((1, ), float(n), dtype=torch.float64, device=x.device)
            total, mean, var = all_reduce_moments(count, mean, var, group)
            # every rank empty (total 0, moments NaN): finite placeholders (0, 1), so that the
            # published state and every gradient stay finite (they are 0: nothing has an
            # element); the caller leaves its state alone. A NaN batch stays NaN.
            present = total > 0
            mean = torch.where(present, mean, 0.0)
            var = torch.where(present, var, 1.0)
            # a tensor: the global count is not on the host (no sync); total <= 1 -> 1
            bessel = torch.where(total > 1, total / (total - 1), 1.0)
        stat_dtype = mean.dtype
        has_prior = prior_mean is not None
        keep = None
        if not has_prior:
            fused_mean, fused_var, fused_var_running = mean, var, var * bessel
            status = torch.full((), NO_PRIOR, dtype=torch.uint8, device=x.device)
            prior_mean = mean  # placeholder for save_for_backward, unused
        else:
            prior_mean, prior_var = prior_mean.to(stat_dtype), prior_var.to(stat_dtype)
            spread = p * (1 - p) * (mean - prior_mean) ** 2
            fused_mean = p * prior_mean + (1 - p) * mean
            fused_var = p * prior_var + (1 - p) * var + spread
            fused_var_running = p * prior_var + (1 - p) * var * bessel + spread
            if gate_ratio is not None:
                keep = (prior_var / var).mean() < gate_ratio
                fused_mean = torch.where(keep, fused_mean, mean)
                fused_var = torch.where(keep, fused_var, var)
                fused_var_running = torch.where(keep, fused_var_running, var * bessel)
                status = torch.where(keep, FUSED, GATED).to(torch.uint8)
            else:
                status = torch.full((), FUSED, dtype=torch.uint8, device=x.device)
        # statistics stay in (at least) float32: native BN takes a bf16/fp16 input with float32
        # statistics and affine (AMP), but refuses mixed low-precision statistics
        y = F.batch_norm(x, fused_mean, fused_var, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(x, weight, mean, fused_mean, fused_var, prior_mean,
                              keep if keep is not None else mean.new_ones(()), total)
        ctx.has_prior, ctx.p, ctx.eps, ctx.has_bias = has_prior, p, eps, bias is not None
        ctx.group = group
        ctx.mark_non_differentiable(*(t for t in (fused_var_running, status, total)
                                      if t is not None))
        return y, fused_mean, fused_var, fused_var_running, status, total

    @staticmethod
    def backward(ctx, grad_y, grad_fmean, grad_fvar, _grad_running, _grad_status, _grad_total):
        x, weight, mean, fmean, fvar, prior_mean, keep, total = ctx.saved_tensors
        c, n = x.shape[1], x.numel() // x.shape[1]
        synced = ctx.group is not None
        invstd = (fvar + ctx.eps).rsqrt()
        gamma = weight if weight is not None else x.new_ones(c)
        if n > 0:
            if grad_y is None:
                grad_y = torch.zeros_like(x)
            dx, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
                grad_y.contiguous(), x, gamma, None, None, fmean, invstd, True, ctx.eps,
                [True, True, True])
        else:  # an empty rank (synced only; the native kernel would divide by the count 0)
            dx, dgamma, dbeta = torch.zeros_like(x), gamma.new_zeros(c), gamma.new_zeros(c)
        grad_weight = dgamma if weight is not None else None
        grad_bias = dbeta if ctx.has_bias else None
        external = grad_fmean is not None or grad_fvar is not None
        if not (ctx.has_prior or external or synced):  # plain BN: its backward is exact
            return dx, None, None, grad_weight, grad_bias, None, None, None, None
        gamma_f = gamma.to(invstd.dtype)
        # what the normalization sends to its statistics, and what BN's backward assumed
        g_fm_y = -gamma_f * invstd * dbeta.to(invstd.dtype)
        g_fv_y = -0.5 * gamma_f * invstd * invstd * dgamma.to(invstd.dtype)
        g_fm = g_fm_y if grad_fmean is None else g_fm_y + grad_fmean
        g_fv = g_fv_y if grad_fvar is None else g_fv_y + grad_fvar
        grad_pm = grad_pv = None
        if ctx.has_prior:
            p, k = ctx.p, keep.to(invstd.dtype)
            cross = 2 * p * (1 - p) * (mean - prior_mean) * g_fv
            own = 1 - p * k  # gain of the batch moments: 1 - p when fused, 1 when gated
            d_mean = own * g_fm + k * cross
            d_var = own * g_fv
            grad_pm = (k * (p * g_fm - cross)).to(prior_mean.dtype)
            grad_pv = (k * p * g_fv).to(prior_mean.dtype)
        else:
            d_mean, d_var = g_fm, g_fv
        if not synced:
            # true dx - BN's dx = (d_mean - g_fm_y)/n + 2 (x - mean) d_var/n
            #                     - 2 (x - fmean) g_fv_y/n
            slope = 2 * (d_var - g_fv_y) / n
            offset = (d_mean - g_fm_y - 2 * mean * d_var + 2 * fmean * g_fv_y) / n
        else:
            # d_mean, d_var: this rank's shares of dL/dmu and dL/dsigma^2 (linear in local
            # quantities); their sum over the ranks is the total
            packed = all_reduce_sum(torch.cat((d_mean, d_var)), ctx.group)
            d_mean, d_var = packed[:c], packed[c:]
            if n == 0:
                return dx, grad_pm, grad_pv, grad_weight, grad_bias, None, None, None, None
            # true dx - BN's dx = d_mean/N + 2 (x - mu) d_var/N
            #                     - g_fm_y/n_r - 2 (x - fmean) g_fv_y/n_r
            slope = 2 * (d_var / total - g_fv_y / n)
            offset = (d_mean - 2 * mean * d_var) / total - (g_fm_y - 2 * fmean * g_fv_y) / n
        dx.addcmul_(x, slope.to(x.dtype).view(1, -1, 1, 1)).add_(
            offset.to(x.dtype).view(1, -1, 1, 1))
        return dx, grad_pm, grad_pv, grad_weight, grad_bias, None, None, None, None


@MODELS.register_module('BKN')
class BKN(NormBase):
    r"""Batch Kalman Normalization over a 4D input (a ``Conv2d``'s output).

    The batch statistics :math:`(\mu, \sigma^2)` of the input are fused with a prediction
    :math:`(\hat\mu, \hat\sigma^2)` propagated from the previous BKN layer through the
    transition (ReLU, residual sums, the producing conv; :mod:`~mmnorm_plugin.norms.bkn_prior`)
    as the moments of a two-component mixture with gain :math:`p`:

    .. math::
        \tilde\mu = p\,\hat\mu + (1-p)\,\mu, \qquad
        \tilde\sigma^2 = p\,\hat\sigma^2 + (1-p)\,\sigma^2 + p(1-p)\,(\mu - \hat\mu)^2, \qquad
        y = \gamma\,\frac{x - \tilde\mu}{\sqrt{\tilde\sigma^2 + \epsilon}} + \beta

    A layer without a predecessor (or whose prediction the gate rejects) is BN. The running
    statistics are an EMA of the fused ones, so eval mode is BN with them (foldable). BN's
    parameter and buffer names, so BN checkpoints load and mmdet's ``norm_eval`` and
    mmengine's norm weight-decay rules apply. The module docstring has the derivation, the
    defaults' reasons and the caveats.

    Args:
        num_features (int): ``C`` from an expected input of size ``(N, C, H, W)``.
        eps (float): added to the variance, for numerical stability. Default: 1e-5 (BN's and
            the official code's).
        momentum (float, optional): weight of the new value in the running statistics' EMA
            (PyTorch's convention); ``None`` for a cumulative average. Default: 0.1 (the
            official decay 0.9).
        affine (bool): learn ``γ`` and ``β``. Default: ``True``.
        track_running_stats (bool): keep running statistics, which eval mode normalizes with.
            Default: ``True``.
        prior_weight (float): the gain ``p`` on the prediction, in [0, 1]; 0 is BN. Default:
            0.9, the official value for micro-batches (the official large-batch run uses 0.05).
        gate_ratio (float, optional): a layer skips the fusion when the channel mean of prior
            variance / batch variance is ``>= gate_ratio`` (a broken prediction); ``None``
            disables the gate. Default: 100 (official).
        prior_mode (str): ``'closed_form'``, the exact expectation of the official estimator
            (deterministic, cheap), or ``'sample'``, the official one Monte-Carlo map through
            the conv (uses the global RNG). Default: ``'closed_form'``.
        prior_input (str): ``'normalized'``, the distribution of the previous layer's output
            (what the conv reads), or ``'estimated'``, the official fused input statistics.
            Default: ``'normalized'`` (see "What is propagated" in the module docstring).

    Shape:
        - Input: :math:`(N, C, H, W)`, ideally a ``Conv2d``'s output (else the layer is BN).
        - Output: :math:`(N, C, H, W)` (same shape as input).

    Examples::

        >>> from mmnorm_plugin.norms.bkn import FUSED
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), BKN(8), nn.ReLU(),
        ...                     nn.Conv2d(8, 8, 3, padding=1, bias=False), BKN(8))
        >>> net(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
        >>> int(net[4].prior_status) == FUSED  # the second layer fused the first one's prior
        True
        >>> # in an mmdet config: norm_cfg = dict(type='BKN')
    """
    _PRIOR_MODES = ('closed_form', 'sample')
    _PRIOR_INPUTS = ('estimated', 'normalized')

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 prior_weight: float = 0.9, gate_ratio: Optional[float] = 100.0,
                 prior_mode: str = 'closed_form', prior_input: str = 'normalized',
                 device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        if not 0.0 <= float(prior_weight) <= 1.0:
            raise ValueError(f'BKN prior_weight must be in [0, 1], got {prior_weight}')
        if gate_ratio is not None and not gate_ratio > 0:
            raise ValueError(f'BKN gate_ratio must be > 0 or None, got {gate_ratio}')
        if prior_mode not in self._PRIOR_MODES:
            raise ValueError(f'BKN prior_mode must be one of {self._PRIOR_MODES}, '
                             f'got {prior_mode!r}')
        if prior_input not in self._PRIOR_INPUTS:
            raise ValueError(f'BKN prior_input must be one of {self._PRIOR_INPUTS}, '
                             f'got {prior_input!r}')
        self.prior_weight = float(prior_weight)
        self.gate_ratio = None if gate_ratio is None else float(gate_ratio)
        self.prior_mode = prior_mode
        self.prior_input = prior_input
        # what the last training forward did (NO_PRIOR / FUSED / GATED); diagnostics only, not
        # in the state_dict so that BN checkpoints keep loading strictly
        self.register_buffer('prior_status', torch.zeros((), dtype=torch.uint8),
                             persistent=False)
        # how this layer's conv input derives from earlier BKN outputs, recorded by eager
        # training forwards and replayed under torch.compile (predict); and the state this
        # layer published in the current compiled forward
        self._chain, self._chain_recorded = None, False
        self._published: Optional[GaussianState] = None
        self._finish_init()

    def _check_input_dim(self, x: Tensor) -> None:
        check_input_4d(self, x)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, prior_weight={self.prior_weight}, '
                f'gate_ratio={self.gate_ratio}, prior_mode={self.prior_mode}, '
                f'prior_input={self.prior_input}')

    # ---------------------------------------------------------------------------------------
    def predict(self, x: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
        """Prior (mean, var) for ``x`` from the chain, or None when ``x`` has no predecessor.

        Eager: the chain is read from the autograd graph (the states earlier BKN layers
        attached to their outputs) and recorded (``_chain``). Under ``torch.compile``, which
        cannot read the graph, the recorded chain is replayed on the states the earlier layers
        published in the same forward: tap the convs and train one eager step first.
        """
        if torch.compiler.is_compiling():
            if not self._chain_recorded:
                raise RuntimeError(
                    f'{type(self).__name__} under torch.compile replays the layer chain that an '
                    'eager training forward recorded: call mmnorm_plugin.norms.tap_convolutions('
                    'model) and train one eager step before compiling.')
            state = replay_chain(self._chain)
        else:
            fn = x.grad_fn
            self._chain, self._chain_recorded = None, True
            if fn is None or type(fn).__name__ != 'ConvolutionBackward0':
                return None
            # the chain state first: a layer that starts a chain skips reading the conv's record
            state, self._chain = walk_chain(fn.next_functions[0][0])
        if state is None:
            return None
        origin = producing_conv(x)
        if origin is None:
            return None
        weight = origin.weight
        if state.mean.numel() != weight.shape[1] * origin.groups:
            return None
        bias = origin.bias
        if origin.has_bias and bias is None:
            if not torch.compiler.is_compiling():
                warn_once('bkn-frozen-bias', 'BKN: the producing conv has a bias that autograd '
                          'cannot reach (frozen); these layers run as plain BN.')
            return None
        # the trainable parameter (when reachable) lets the loss shape W through the prior too,
        # as in the official code where the synthetic map goes through the shared conv variable
        if origin.parameter is not None and origin.parameter.shape == weight.shape:
            weight = origin.parameter
        dt = torch.promote_types(x.dtype, torch.float32)
        weight = weight.to(dt)
        if origin.input is not None:
            in_size = tuple(origin.input.shape[-2:])
        else:  # input not saved (frozen weight): the smallest size consistent with the output
            in_size = tuple((o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in zip(
                x.shape[-2:], origin.stride, origin.padding, origin.dilation, weight.shape[-2:]))
        fn = predict_conv_moments if self.prior_mode == 'closed_form' else sample_conv_moments
        return fn(state, weight, bias, in_size, origin.stride, origin.padding, origin.dilation,
                  origin.groups)

    def _publish(self, y: Tensor, mean: Tensor, var: Tensor) -> None:
        if self.prior_input == 'estimated':
            state = GaussianState(mean, var, False)
        else:
            scale2 = var / (var + self.eps)
            out_mean = torch.zeros_like(mean)
            if self.weight is not None:
                scale2 = scale2 * self.weight.to(var.dtype) ** 2
                out_mean = self.bias.to(mean.dtype).expand_as(mean)
            state = GaussianState(out_mean, scale2, False)
        if torch.compiler.is_compiling():
            self._published = state  # what a recorded chain reads (see predict)
        elif y.grad_fn is not None:
            y.grad_fn.metadata[STATE_KEY] = state, ('bkn', self)

    def forward(self, x: Tensor) -> Tensor:
        check_nchw(x, self.num_features, self._layer_name)
        use_batch_stats = self.training or self.running_mean is None
        if not torch.jit.is_scripting():
            # a synced layer's empty rank still takes part in the collectives (SyncBKN)
            if use_batch_stats and x.numel() == 0 and self._sync_group() is not None:
                return self._forward_batch_stats(x)
        if not use_batch_stats or x.numel() == 0:
            # eval (foldable), or an empty batch (0 RoIs): keep the graph to weight/bias so
            # DDP sees them used, leave the statistics alone
            if x.numel() == 0 and self.running_mean is None:
                return x * (self.weight.view(1, -1, 1, 1) if self.affine else 1)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return self._forward_batch_stats(x)

    @torch.jit.unused
    def _sync_group(self) -> Optional[Any]:
        """The process group the batch statistics pool over; None when they are this
        process's own (always for BKN; see :class:`SyncBKN`)."""
        return None

    @torch.jit.unused
    def _forward_batch_stats(self, x: Tensor) -> Tensor:
        group = self._sync_group()
        n = x.numel() // x.shape[1]
        # synced: the statistics pool every rank's values and their total count is only on the
        # device, so the one-value-per-statistic check (from the shape) applies outside a group
        self._check_batch(x, n if group is None else -1)
        if self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            warn_once('bkn-no-grad', 'BKN in training mode without autograd (torch.no_grad or '
                      'activation checkpointing): no layer chain, running as plain BN.')

        p = self.prior_weight
        prior = self.predict(x) if p > 0 else None
        prior_mean, prior_var = prior if prior is not None else (None, None)
        y, fused_mean, fused_var, fused_var_running, status, total = _KalmanNormFunction.apply(
            x, prior_mean, prior_var, self.weight, self.bias, p, self.gate_ratio, self.eps, group)
        # synced: a step in which every rank's batch was empty leaves the state alone, as an
        # empty batch does outside a group (tensor conditions: the count is on the device)
        present = None if total is None else (total > 0).view(())
        running_mean, running_var = fused_mean.detach(), fused_var_running.detach()
        if present is not None:
            status = torch.where(present, status, self.prior_status)
            # NaN targets are skipped by update_running_stats
            running_mean = torch.where(present, running_mean, math.nan)
            running_var = torch.where(present, running_var, math.nan)
        write_state(self, 'prior_status', status)
        if self.training and self.track_running_stats:
            self._update_running_stats(running_mean, running_var, present)
        self._publish(y, fused_mean, fused_var)
        return y




@MODELS.register_module('SyncBKN')
@synced_variant_of(BKN)
class SyncBKN(BKN):
    r"""BKN whose batch statistics are those of every rank's batch: ``norm_cfg=dict(type=
    'SyncBKN')``.

    In training inside a process group of more than one rank, the batch moments that BKN
    fuses with the prior are computed over the union of all the ranks' batches (as
    ``nn.SyncBatchNorm`` does for BN). The prior depends only on the previous layer's fused
    statistics (then global) and the conv weights (identical under DDP), so the prior, fusion,
    gate, running statistics and ``prior_status`` are the same on every rank and equal to those
    of :class:`BKN` on the concatenated batch; so are the outputs and the gradients (the
    gradients of ``weight``/``bias`` and of the convs are each rank's contribution, summed by
    DDP, as for SyncBN). Derivation: :class:`_KalmanNormFunction`.

    What is communicated, per layer and training iteration (``C`` channels, ``w`` ranks):

    * forward: one ``all_reduce`` of the packed local ``[n_r, n_r mu_r, n_r(sigma_r^2 +
      mu_r^2)]``, ``2C+1`` float64 numbers = ``(2C+1)*8`` bytes
      (:func:`~.collectives.all_reduce_moments`);
    * backward: one ``all_reduce`` of the packed gradients w.r.t. the batch mean and variance,
      ``2C`` numbers in the statistics' dtype = ``2C*4`` bytes (float32; float64 layers: 8).

    ``nn.SyncBatchNorm`` moves, per layer and iteration, an ``all_gather`` of ``(2C+1)``
    float32 numbers from every rank (``w*(2C+1)*4`` bytes received per rank) in forward and an
    ``all_reduce`` of ``2C`` float32 in backward. Example ``C=256``, ``w=8``: SyncBKN 4104 +
    2048 bytes, SyncBN 16416 + 2048 bytes.

    Outside a process group, in a group of one rank, or in eval mode it is exactly
    :class:`BKN` (no collective; eval uses the running statistics, or this rank's batch with
    ``track_running_stats=False`` as ``nn.SyncBatchNorm``). Parameter and buffer names are
    BKN's (and BN's), so checkpoints interchange; :meth:`from_unsynced` / :meth:`to_unsynced`
    convert a layer.

    Unequal and empty batches: ranks may hold different numbers of images (or RoIs), weighted
    by their element counts. A rank with an empty batch still takes part in both collectives
    (count 0); its output is empty and its ``weight``/``bias`` gradients are 0. When every
    rank is empty the layer's state (running statistics, ``num_batches_tracked``,
    ``prior_status``) is left alone, as BKN's for an empty batch, and the gradients are 0.
    Every rank must therefore run the layer in forward; and in backward too: a
    rank whose backward never reaches the layer (its output not used by the loss, e.g. an
    mmdet head whose loss skips an empty batch without a ``* 0`` term) leaves the other ranks
    waiting in the backward ``all_reduce`` forever, as with ``nn.SyncBatchNorm``. Every rank
    must call the synced layers in the same order, forward and backward (identical models).
    The one-value-per-channel check (``ValueError`` for a batch of one 1x1 map) applies
    outside a group only: inside, the total count is known only on the device (reading it is a
    host sync), so a group whose union holds a single value per channel normalizes with
    variance 0 (output = bias) instead of raising; a rank with one value is fine.

    Randomness and per-rank priors: ``prior_mode='sample'`` draws its synthetic map from each
    process's global RNG, so the priors agree across ranks only if the RNG states do. If they
    differ, so do the priors, hence the fused statistics, the gate, ``prior_status`` and the
    running statistics per rank (DDP's ``broadcast_buffers`` then overwrites the running
    statistics with rank 0's at the next forward); the gradients remain exact for what each
    rank computed (the backward reduction sums each rank's own contributions), but the layer
    is no longer BKN on the concatenated batch. The default ``'closed_form'`` prior is
    deterministic. The same holds for ranks whose inputs have different spatial sizes (mmdet
    pads each GPU's batch to its own maximum): the closed-form prior depends on the conv's
    zero-padding fraction of the input size, so the ranks' priors differ slightly.

    Args:
        process_group (optional): the group whose ranks share statistics. Default: ``None``,
            the default (world) group, as ``nn.SyncBatchNorm``.
        Every other argument is :class:`BKN`'s, with its default.

    Shape:
        - Input: :math:`(N, C, H, W)`; ``N`` may differ between ranks, and be 0.
        - Output: :math:`(N, C, H, W)` (same shape as input).

    Examples::

        >>> # in an mmdet config: norm_cfg = dict(type='SyncBKN'), or BKN and mmengine's
        >>> # sync_bn='torch'
        >>> layer = SyncBKN.from_unsynced(BKN(8))
        >>> layer(torch.randn(2, 8, 4, 4)).shape  # outside a process group: BKN exactly
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, num_features: int, *args, process_group: Optional[Any] = None,
                 **kwargs) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.process_group = process_group

    @torch.jit.unused
    def _sync_group(self) -> Optional[Any]:
        # as nn.SyncBatchNorm: training only (eval without running statistics stays local)
        return training_sync_group(self)

    @classmethod
    def from_unsynced(cls, module: BKN, process_group: Optional[Any] = None) -> 'SyncBKN':
        """A SyncBKN with ``module``'s hyperparameters, device, dtype, training mode, parameters
        and buffers (shared, not copied, as ``nn.SyncBatchNorm.convert_sync_batchnorm``)."""
        return convert_norm(module, cls, BKN, process_group=process_group)

    def to_unsynced(self) -> BKN:
        """The :class:`BKN` holding this layer's hyperparameters, parameters and buffers."""
        return convert_norm(self, BKN, BKN)
