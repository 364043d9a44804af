"""Stateless statistics maths shared by the norms: moments of a batch, and normalization with
statistics that carry gradients."""
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['normalize_with_stats', 'batch_moments']


def normalize_with_stats(x: Tensor, mean: Optional[Tensor], var: Tensor,
                         weight: Optional[Tensor], bias: Optional[Tensor],
                         eps: float, eps_outside_sqrt: bool = False) -> Tensor:
    """y = weight * (x - mean) / sqrt(var + eps) + bias, per channel of an NCHW tensor.

    Unlike ``F.batch_norm(training=False)`` the statistics may carry gradients (native
    batch norm refuses gradients w.r.t. its running statistics). The op is folded into one
    per-channel scale and shift so that only one full-size tensor is written.

    Args:
        mean: per-channel mean, or None for no centering (MABN).
        eps_outside_sqrt: use ``sqrt(var) + eps`` (the official CBN code's form).
    """
    std = var.sqrt() + eps if eps_outside_sqrt else (var + eps).sqrt()
    scale = std.reciprocal()
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale if mean is not None else torch.zeros_like(scale)
    if bias is not None:
        shift = shift + bias
    scale = scale.to(x.dtype).view(1, -1, 1, 1)
    shift = shift.to(x.dtype).view(1, -1, 1, 1)
    return torch.addcmul(shift, x, scale)


def batch_moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-channel biased variance and mean of an NCHW tensor over (N, H, W), like
    ``torch.var_mean(x, dim=(0, 2, 3), unbiased=False)`` but in at least float32 and not
    differentiable.

    One native group-norm pass with one group per channel gives the per-(sample, channel)
    moments, pooled over the batch with the parallel-variance formula (exact, no
    E[x²] − E[x]² cancellation). ``var_mean`` over the non-contiguous (0, 2, 3) axes is
    measured 3-9x slower on CPU (e.g. 6.9 vs 0.56 ms at (2, 256, 32, 32), 70 vs 11 ms at
    (512, 256, 7, 7), one thread).
    """
    n, c = x.shape[:2]
    hw = x.numel() // (n * c)
    # eps=0: rstd is exactly 1/sqrt(var) per (sample, channel); a constant slice gives inf,
    # i.e. variance 0
    _, mean_nc, rstd_nc = torch.ops.aten.native_group_norm(x.detach().contiguous(), None, None,
                                                           n, c, hw, c, 0.0)
    dtype = torch.promote_types(mean_nc.dtype, torch.float32)
    mean_nc = mean_nc.to(dtype).view(n, c)
    var_nc = rstd_nc.to(dtype).view(n, c).pow(-2)
    mean = mean_nc.mean(0)
    return var_nc.mean(0) + (mean_nc - mean).pow(2).mean(0), mean
