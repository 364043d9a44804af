"""Moving Average Batch Normalization (MABN).

Yan, Wan, Zhang, Zhang, Wei, Sun, "Towards Stabilizing Batch Statistics in Backward
Propagation of Batch Normalization", ICLR 2020, arXiv 2001.06838. Official code:
``megvii-model/MABN`` (``MABN.py``, the layer the authors recommend; the detection layer has
the same logic).
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor

from .base import NormBase, update_running_stats, write_state
from .input_checks import check_input_4d, check_nchw
from .reporting import warn_once
from .state_checks import FINITE, VARIANCE
from .statistics import normalize_with_stats

__all__ = ['MABN']

_DIMS = (0, 2, 3)


def _second_moment(x: Tensor) -> Tensor:
    """Per-channel E[x^2] in float32 at least, in one pass without a temporary (MABN never
    needs E[x]; on FPN shapes an extra pass for it is a third of the forward)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    norm = torch.linalg.vector_norm(x, dim=_DIMS, dtype=dtype)
    return norm.square_() / (x.numel() // x.shape[1])


class _MABNFunction(torch.autograd.Function):
    """y = gamma * r * x / sqrt(chi2 + eps) + beta with MABN's hand-written backward.

    ``chi2`` (the forward statistic, SMA or current) and ``r`` are per-channel constants of
    the backward, as in the paper: the dependence of chi2 on x is accounted for only through
    Psi, which is itself replaced by its moving average. ``x`` is saved instead of
    ``z = x / sqrt(chi2 + eps)`` so that the forward writes a single full-size tensor; every
    quantity of the backward is rewritten in terms of x and per-channel factors.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                chi2: Tensor, r: Tensor, psi_history: Tensor, phase: Tensor, eps: float,
                nonfinite_count: Tensor) -> Tensor:
        inv_std = (chi2 + eps).rsqrt()
        gamma_r = r if weight is None else weight * r
        # phase = (slot, previous slot, use the SMA) of this call, as device integers: a
        # Python int would make torch.compile specialize (recompile) on every iteration
        ctx.save_for_backward(x, weight, inv_std, r, phase)
        # The ring buffer is written in backward, in place, so it is held as an attribute
        # (save_for_backward would reject the in-place update through its version check).
        ctx.psi_history = psi_history
        ctx.nonfinite_count = nonfinite_count
        ctx.psi_written = False
        return normalize_with_stats(x, None, chi2, gamma_r, bias, eps)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, inv_std, r, phase = ctx.saved_tensors
        history = ctx.psi_history
        slot, prev_slot, use_sma = phase[0:1], phase[1:2], phase[2].bool()
        gamma_r = r if weight is None else weight * r
        m_count = x.numel() // x.shape[1]
        # sum(g * x) serves both Psi and dL/dgamma; reductions in float32 at least
        sum_gx = torch.sum(grad_out * x, dim=_DIMS, dtype=torch.promote_types(x.dtype,
                                                                              torch.float32))
        # Psi_t = mean(g_hat * z) with g_hat = gamma * r * dL/dy and z = x * inv_std
        psi = (gamma_r * inv_std * sum_gx / m_count).to(history.dtype)
        # A non-finite gradient (NaN loss, fp16 overflow) must not enter the window: those
        # channels repeat the previous iteration's Psi, finite by induction.
        finite = torch.isfinite(psi)
        psi = torch.where(finite, psi, history.index_select(0, prev_slot)[0])
        # The window with this iteration's slot holding this backward's Psi: identical to
        # "write, then average", but a second backward through the same graph (retain_graph)
        # does not write the state twice.
        window = (history.sum(0) - history.index_select(0, slot)[0] + psi) / history.shape[0]
        psi_bar = torch.where(use_sma, window, psi)
        if not ctx.psi_written:
            with torch.no_grad():
                history.index_copy_(0, slot, psi.unsqueeze(0))
                ctx.nonfinite_count.add_(finite.logical_not().any())
            ctx.psi_written = True

        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # dL/dx = (g_hat - z * Psi_bar) / sqrt(chi2 + eps), no mean-of-gradient term
            a = (gamma_r * inv_std).to(x.dtype).view(1, -1, 1, 1)
            b = (inv_std * inv_std * psi_bar).to(x.dtype).view(1, -1, 1, 1)
            grad_x = (grad_out * a).addcmul_(x, b, value=-1)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (r * inv_std * sum_gx).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            # float32 accumulation under autocast (a bfloat16 sum over N*H*W loses digits)
            grad_bias = grad_out.sum(dim=_DIMS, dtype=sum_gx.dtype)
        return (grad_x, grad_weight, grad_bias) + (None, ) * 6


@MODELS.register_module()
class MABN(NormBase):
    r"""Moving Average Batch Normalization, for NCHW inputs.

    No centering: weight centralization of the producing conv (:class:`CenConv2d`) keeps
    E[x] close to 0, and without a mean the mean-of-gradient statistic of BN's backward
    disappears too. The remaining batch statistics, forward and backward, are replaced by
    simple moving averages (SMA) over the last :math:`m` iterations. Per channel, at training
    iteration :math:`t` (counted from 1 in ``num_batches_tracked``):

    .. math::
        \chi^2_t = \mathrm{mean}_{N,H,W}(x^2), \qquad
        \bar\chi^2 = \begin{cases} \chi^2_t & t \le m \text{ or } t < T_w \\
                     \frac1m \sum_{i=0}^{m-1} \chi^2_{t-i} & \text{otherwise}\end{cases}

        z = \frac{x}{\sqrt{\bar\chi^2 + \epsilon}}, \qquad
        r = \mathrm{clip}_{[1/r_{max},\, r_{max}]}
            \frac{\sqrt{\bar\chi^2 + \epsilon}}{\sqrt{R + \epsilon}}
            \ (r = 1 \text{ while } t \le \max(T_r, T_w)), \qquad
        y = \gamma\, r z + \beta

        R \leftarrow (1 - \text{momentum})\, R + \text{momentum}\, \bar\chi^2

    Backward (hand-written; :math:`r`, :math:`\bar\chi^2` and past entries are constants):

    .. math::
        \hat g = \gamma r \frac{\partial L}{\partial y}, \qquad
        \Psi_t = \mathrm{mean}_{N,H,W}(\hat g z), \qquad
        \frac{\partial L}{\partial x} = \frac{\hat g - z\,\bar\Psi}{\sqrt{\bar\chi^2+\epsilon}}

    with :math:`\bar\Psi` the SMA of :math:`\Psi` over the same window and under the same
    condition as :math:`\bar\chi^2`. Without SMA (:math:`\bar\Psi = \Psi_t`,
    :math:`\bar\chi^2 = \chi^2_t`) this is exactly the gradient of the forward with
    :math:`r` held constant. Inference is a per-channel affine,
    :math:`y = \gamma x / \sqrt{R + \epsilon} + \beta`, i.e. BN's eval formula with
    ``running_mean = 0``: the layer folds into the preceding conv like BN.

    The module is a ``_BatchNorm`` with BN's names (``weight``, ``bias``, ``running_mean``
    (always 0), ``running_var`` (= R), ``num_batches_tracked`` (= t)) and ``_abbr_ = 'bn'``, so
    mmdet's ``norm_eval``, mmengine's ``norm_decay_mult`` and conv-BN folding treat it as BN
    and ResNet keys stay ``bn1``... The two ring buffers ``chi2_history`` and ``psi_history``
    (``buffer_size x C``) complete the state; everything is in registered buffers, so a
    resumed run continues exactly.

    Args:
        num_features (int): ``C`` from an expected input of size ``(N, C, H, W)``.
        buffer_size (int): the SMA window ``m`` in iterations. Default: 16, the official
            detection setting (batch 2 per GPU emulating batch 32, ``real_B / B``).
        momentum (float, optional): weight of the new value in the EMA of ``R`` (PyTorch's
            convention); ``None`` for a cumulative average. Default: 0.02, the official
            code's keep factor 0.98.
        warmup_iters (int): iterations ``T_w`` during which the current-batch ``χ²`` and
            ``Ψ`` are used instead of the SMA: early weights move fast, so old statistics are
            stale. Default: 100 (official).
        renorm_hold_iters (int): ``r`` is fixed to 1 for ``t <= max(T_r, T_w)`` until ``R``
            is a meaningful EMA. Default: 1000 (hard-coded in the official layer; its
            ImageNet variant uses 100).
        r_max (float): ``r`` is clipped to ``[1 / r_max, r_max]`` afterwards, so that a stale
            ``R`` cannot rescale the output arbitrarily. Default: 5 (official).
        eps (float): added to the statistic inside the square root, for numerical stability.
            Default: 1e-5.
        affine (bool): learn per-channel ``γ`` and ``β``. Default: ``True``.
        track_running_stats (bool): must be ``True``: ``R`` is part of the method (renorm
            and inference), not an option. Default: ``True``.

    Shape:
        - Input: :math:`(N, C, H, W)`, the output of a :class:`CenConv2d` (see Notes).
        - Output: :math:`(N, C, H, W)` (same shape as input).

    Examples::

        >>> from mmnorm_plugin.models.layers import CenConv2d
        >>> conv, mabn = CenConv2d(3, 8, 3, padding=1, bias=False), MABN(8, buffer_size=4)
        >>> mabn(conv(torch.randn(2, 3, 16, 16))).sum().backward()  # Psi is written here
        >>> mabn.num_batches_tracked, mabn.psi_history.shape
        (tensor(1), torch.Size([4, 8]))
        >>> # in an mmdet config: norm_cfg = dict(type='MABN'), conv_cfg = dict(type='CenConv2d')

    Notes:
        * Weight centralization of the producing conv is part of the method (without it
          E[x] != 0 and the second moment overstates the variance). Pretrained backbones need
          weight-centralized weights: see :mod:`mmnorm_plugin.model_converters.mabn`.
        * Psi is produced in backward, at the slot decided in forward. A training-mode
          forward with no backward through this layer leaves that slot holding the Psi of
          m iterations earlier; a second backward through the same graph does not write it
          again. Activation checkpointing (``with_cp=True``) re-runs the forward and would
          count the iteration twice (as it updates ``nn.BatchNorm2d`` stats twice).
        * The method is per GPU by design, and there is no synced variant: its forward and
          backward statistics are already moving averages over ``buffer_size`` iterations
          (the variance a cross-GPU pool would remove), and pooling ``E[x²]`` and ``Ψ`` over
          GPUs (two all-reduces of ``C`` numbers) would be an estimator the paper neither
          derives nor measures. mmengine's ``sync_bn='torch'`` would turn MABN into
          ``nn.SyncBatchNorm``: our ``tools/train.py`` refuses it, and once the plugin is
          imported mmengine's Runner keeps MABN (with a warning). DDP must keep
          ``broadcast_buffers=False`` (mmengine's default), otherwise rank 0's ring buffers
          overwrite the other ranks' at every forward.
        * Loading a plain BN state dict (strict or not): a non-zero ``running_mean`` cannot
          be represented (MABN never centers) and is reset to 0 with a warning; the missing
          ring buffers are not an error: the window restarts empty and the iteration counter
          is reset to 0, so warm-up and the renorm hold start over (averaging empty slots
          would shrink chi2 and drag R down). The same holds for a MABN checkpoint with
          another ``buffer_size`` (the warning names both sizes); R and the affine parameters
          are kept. Convert BN checkpoints with ``tools/model_converters/resnet_to_mabn.py``
          instead. A load that does not fit (other channel count, wrong shapes) raises before
          anything is modified (:class:`~.base.NormBase`).
        * Non-finite statistics (a NaN/Inf batch, an fp16 overflow in forward or backward)
          never enter the state: for the affected channels the window slot repeats the
          previous iteration's chi2 / Psi and R keeps its value, so the next finite batch
          trains normally (without this, the bad chi2 entered R and every later output was
          NaN). The skip is a tensor select (no device sync); ``nonfinite_count`` counts
          such steps and the log says so once.
        * Empty inputs (0 RoIs) pass through with the inference formula and leave the state
          untouched. One value per channel in training (batch 1 with a 1x1 map, a single
          RoI) raises ValueError as ``nn.BatchNorm2d`` does: during warm-up the current
          chi2 is the statistic and would normalize that value to +-1.
        * The input must have the layer's dtype, or be float16/bfloat16 into a float32
          layer (autocast; statistics in float32); a float64 input into a float32 layer
          raises.
        * No host synchronisation in a training step, and nothing ``torch.compile`` must
          specialize on: ring slots and phases are computed on the device from
          ``num_batches_tracked`` (indexed writes, ``where`` selects), so one compiled
          graph serves every iteration (``torch.compile(fullgraph=True)`` traces the layer
          without a break).
        * ``torch.jit.script`` works for the eval-mode layer (the inference formula); the
          scripted module refuses training mode (the training step is a custom autograd
          function, which TorchScript cannot compile).
    """

    def __init__(self,
                 num_features: int,
                 buffer_size: int = 16,
                 momentum: Optional[float] = 0.02,
                 warmup_iters: int = 100,
                 renorm_hold_iters: int = 1000,
                 r_max: float = 5.0,
                 eps: float = 1e-5,
                 affine: bool = True,
                 track_running_stats: bool = True,
                 device=None,
                 dtype=None):
        if not track_running_stats:
            raise ValueError('MABN needs track_running_stats=True: the EMA statistic R '
                             '(running_var) is used in training (renorm) and inference')
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f'MABN buffer_size must be a positive int, got {buffer_size!r}')
        if momentum is not None and not 0.0 < momentum <= 1.0:
            raise ValueError(f'MABN momentum is the weight of the new value (PyTorch '
                             f'convention) and must be in (0, 1], got {momentum}; the '
                             f'official keep factor 0.98 is momentum=0.02')
        if momentum is not None and momentum >= 0.5:
            warn_once('mabn-momentum',
                      f'MABN momentum={momentum} is the weight of the NEW value (PyTorch '
                      f'convention): R then forgets within a few iterations. The official '
                      f'keep factor 0.98 is momentum=0.02.')
        if warmup_iters < 0 or renorm_hold_iters < 0:
            raise ValueError('MABN warmup_iters and renorm_hold_iters must be >= 0')
        if r_max < 1.0:
            raise ValueError(f'MABN r_max must be >= 1, got {r_max}')
        self.buffer_size = buffer_size
        self.warmup_iters = int(warmup_iters)
        self.renorm_hold_iters = int(renorm_hold_iters)
        self.r_max = float(r_max)
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        factory = dict(device=device, dtype=dtype)
        self.register_buffer('chi2_history', torch.zeros(buffer_size, num_features, **factory))
        self.register_buffer('psi_history', torch.zeros(buffer_size, num_features, **factory))
        self._finish_init()

    _optional_state = ('num_batches_tracked', 'chi2_history', 'psi_history')
    # chi2 is a mean of squares; both rings only ever hold finite values
    _state_rules = dict(NormBase._state_rules, chi2_history=VARIANCE,
                        psi_history=FINITE)

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        # called by _BatchNorm.__init__ before the ring buffers exist
        if hasattr(self, 'chi2_history'):
            self.chi2_history.zero_()
            self.psi_history.zero_()

    def _check_input_dim(self, x: Tensor) -> None:
        check_input_4d(self, x)

    def extra_repr(self) -> str:
        return (f'{self.num_features}, buffer_size={self.buffer_size}, '
                f'momentum={self.momentum}, warmup_iters={self.warmup_iters}, '
                f'renorm_hold_iters={self.renorm_hold_iters}, r_max={self.r_max}, '
                f'eps={self.eps}, affine={self.affine}')

    def forward(self, x: Tensor) -> Tensor:
        check_nchw(x, self.num_features, self._layer_name)
        if not self.training or x.numel() == 0:
            # running_mean is 0: this is exactly gamma * x / sqrt(R + eps) + beta
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        return self._forward_train(x)

    @torch.jit.unused
    def _forward_train(self, x: Tensor) -> Tensor:
        self._check_batch(x, x.numel() // x.shape[1])
        with torch.no_grad():
            # The iteration t, its ring slots and phases are device tensors: no host read,
            # and nothing torch.compile would specialize (recompile) on each iteration.
            self._count_batch()
            t = self.num_batches_tracked
            m = self.buffer_size
            use_sma = (t > m) & (t >= self.warmup_iters)
            # one tensor for the backward: AOTAutograd (torch 2.13) may recompute a saved
            # value from the counter it reads after this forward incremented it again
            # (pytorch/pytorch#197039); a stacked value is saved as computed
            phase = torch.stack((t % m, (t - 1) % m, use_sma.long()))
            slot, prev_slot = phase[0:1], phase[1:2]
            chi2_t = _second_moment(x).to(self.chi2_history.dtype)
            # A non-finite channel repeats the previous iteration's chi2 (finite by induction;
            # at t = 1 the slot is rewritten before any average reads it) and leaves R alone.
            finite = torch.isfinite(chi2_t)
            chi2_t = torch.where(finite, chi2_t, self.chi2_history.index_select(0, prev_slot)[0])
            self._note_nonfinite(finite)
            write_state(self, 'chi2_history', chi2_t.unsqueeze(0), slot)
            chi2 = torch.where(use_sma, self.chi2_history.mean(0), chi2_t)
            # r uses R before this iteration's update, as in the official layer
            renorm = ((chi2 + self.eps) / (self.running_var + self.eps)).sqrt().clamp_(
                1.0 / self.r_max, self.r_max)
            r = torch.where(t <= max(self.renorm_hold_iters, self.warmup_iters), 1.0, renorm)
            update_running_stats(self, 'running_var', torch.where(finite, chi2, self.running_var),
                                 self.momentum, t)
        return _MABNFunction.apply(x, self.weight, self.bias, chi2, r, self.psi_history,
                                   phase, self.eps, self.nonfinite_count)

    def _adapt_state(self, state: Dict[str, Any],
                     notes: List[Tuple[str, str]]) -> Dict[str, Any]:
        mean = state.get('running_mean')
        if isinstance(mean, Tensor) and mean.shape == self.running_mean.shape and bool(
                mean.any()):
            notes.append(('mabn-running-mean',
                          'MABN: loaded a non-zero running_mean (a BatchNorm checkpoint?); '
                          'MABN does not center, so it is reset to 0. Convert BN checkpoints '
                          'with tools/model_converters/resnet_to_mabn.py, which folds the '
                          'mean into the bias.'))
            state['running_mean'] = torch.zeros_like(mean)
        names = ('chi2_history', 'psi_history')
        rings = [state.get(n) for n in names]
        own = tuple(self.chi2_history.shape)
        if all(isinstance(r, Tensor) and tuple(r.shape) == own for r in rings):
            return state  # a MABN checkpoint with this window
        sizes = set()
        for name, ring in zip(names, rings):
            if ring is None:
                continue
            if not isinstance(ring, Tensor) or ring.dim() != 2 or (ring.shape[1] !=
                                                                   self.num_features):
                raise ValueError(f'{name} of shape {tuple(getattr(ring, "shape", ()))} '
                                 f'cannot belong to a MABN({self.num_features}) (expected '
                                 f'(buffer_size, {self.num_features}))')
            sizes.add(int(ring.shape[0]))
        # A BN checkpoint (no rings) or another window size: restart the window, and with it
        # the counter, so that warm-up (current statistics) refills it before any average
        # reads it and the renorm hold waits for R again. R and the affine are kept.
        count = state.get('num_batches_tracked')
        if sizes:
            notes.append((f'mabn-window-size-{sorted(sizes)}-{self.buffer_size}',
                          f'MABN: the checkpoint was trained with buffer_size='
                          f'{"/".join(map(str, sorted(sizes)))}, this layer has buffer_size='
                          f'{self.buffer_size}: its window is restarted empty and the '
                          f'iteration count reset to 0 (warm-up and renorm hold start over); '
                          f'R (running_var) and the affine parameters are loaded (reported '
                          f'once for every layer with these sizes).'))
        elif isinstance(count, Tensor) and bool(count.ne(0).any()):
            notes.append(('mabn-no-history',
                          'MABN: the checkpoint has an iteration count but no MABN ring '
                          'buffers (chi2_history/psi_history); the count is reset to 0 so '
                          'that warm-up starts over instead of averaging empty buffers.'))
        for name in names:
            state[name] = torch.zeros(own, dtype=getattr(self, name).dtype)
        state['num_batches_tracked'] = torch.zeros((), dtype=torch.long)
        return state
