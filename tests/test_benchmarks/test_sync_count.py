"""The host-sync counter sees what would stall a GPU stream, and nothing else."""
import torch

from mmnorm_plugin.benchmarks.sync_count import count_host_syncs


def test_counts_scalar_reads_and_data_dependent_shapes():
    x = torch.arange(6.)
    with count_host_syncs() as syncs:
        x.sum().item()
        bool(x[0])
        int(x[1])
        x.nonzero()
        x.repeat_interleave(torch.tensor([1, 2, 1, 1, 1, 1]))
    assert syncs.counts['aten::_local_scalar_dense'] == 3
    assert syncs.counts['aten::nonzero'] == 1
    assert syncs.counts['aten::repeat_interleave'] == 1
    assert syncs.total == 5


def test_ignores_ordinary_ops_and_sees_backward():
    w = torch.randn(3, requires_grad=True)
    with count_host_syncs() as syncs:
        y = (w * 2).repeat_interleave(2).sum()
        y.backward()
    assert syncs.total == 0

    class Reads(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            float(g.sum())  # a sync inside backward
            return g

    with count_host_syncs() as syncs:
        Reads.apply(w).sum().backward()
    assert syncs.total == 1
