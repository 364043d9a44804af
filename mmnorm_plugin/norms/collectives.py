"""The collectives of the synced norms (SyncCBN, SyncBGN, SyncBKN): who pools, and how.

Every synced layer issues exactly these: one :func:`all_reduce_moments` forward (count, mean
and variance of every rank's batch, in one ``all_reduce``) and one :func:`all_reduce_sum` of its
gradient terms backward.
"""
from typing import Tuple

import torch
from torch import Tensor

__all__ = ['sync_world_size', 'training_sync_group', 'all_reduce_moments', 'all_reduce_sum']


def sync_world_size(group=None) -> int:
    """Ranks in ``group`` (default: the world) when a process group exists, else 1.

    The synced layers call this once per training forward to decide whether to communicate:
    outside a process group (or in a group of one) they are their unsynced layer exactly.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def training_sync_group(layer: torch.nn.Module):
    """The process group a synced layer pools its statistics over in this forward, or None
    (per-process statistics): eval mode, no process group, or a group of one rank. The layer's
    ``process_group`` None means the default group (returned as ``dist.group.WORLD``, so that
    None keeps meaning "not synced")."""
    if not layer.training or sync_world_size(layer.process_group) < 2:
        return None
    import torch.distributed as dist
    return layer.process_group if layer.process_group is not None else dist.group.WORLD


def all_reduce_moments(count: Tensor, mean: Tensor, var: Tensor,
                       group=None) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Pool per-rank moments into the moments of the union of every rank's batch.

    Each rank passes its element count ``count`` (shape ``mean.shape[:-1] + (1,)``, 0 for an
    empty batch), mean and biased variance ``(..., C)``; every rank gets back the total count
    and the mean and biased variance of all the ranks' elements together:
    :math:`\mu = \sum_r m_r \mu_r / m`,
    :math:`\sigma^2 = \sum_r m_r(\sigma_r^2 + \mu_r^2) / m - \mu^2`.

    Exactly one ``all_reduce`` (sum) of ``[m_r, m_r\mu_r, m_r(\sigma^2_r + \mu^2_r)]``, i.e.
    ``numel(mean) * 2 + numel(count)`` numbers, in float64: the raw second moment cancels in
    ``E[x^2] - E[x]^2`` at a relative ``1e-16 (\mu/\sigma)^2``, exact for every activation
    float32 can normalize (an ``all_gather`` of per-rank moments, ``nn.SyncBatchNorm``'s choice,
    would avoid the cancellation but moves ``world_size`` times the bytes). An entry whose total
    count is 0 (every rank empty) comes back NaN: callers skip non-finite statistics. A rank's
    non-finite statistics make the pooled ones non-finite, as one NaN in a single batch would.
    Not differentiable (the layers' backward functions reduce their own gradient terms).
    """
    dtype = mean.dtype
    count = count.to(torch.float64)
    present = count > 0
    # an empty rank's moments may be anything (0/0): weight 0 must not turn them into NaN
    mean = torch.where(present, mean.detach().to(torch.float64), 0.0)
    var = torch.where(present, var.detach().to(torch.float64), 0.0)
    packed = torch.cat((count, count * mean, count * (var + mean * mean)), dim=-1)
    all_reduce_sum(packed, group)
    c = mean.shape[-1]
    total, first, second = packed.split((1, c, c), dim=-1)
    mean = first / total
    var = (second / total - mean * mean).clamp_min(0.0)
    return total.to(dtype), mean.to(dtype), var.to(dtype)


def all_reduce_sum(tensor: Tensor, group=None) -> Tensor:
    """In-place sum of ``tensor`` over the ranks of ``group``; returns it. The one collective
    the synced layers issue (kept in one place so that a test can count the calls)."""
    import torch.distributed as dist
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor
