"""The state mechanics every norm shares (norms/base.py): the running-statistics EMA."""
import torch
from torch import nn

from mmnorm_plugin.norms.base import update_running_stats


def test_update_running_stats_follows_torch_momentum_convention():
    bn = nn.BatchNorm2d(3)
    bn.running_mean.zero_()
    running = bn.running_mean
    update_running_stats(bn, 'running_mean', torch.ones(3), 0.1, None)
    torch.testing.assert_close(running, torch.full((3, ), 0.1))
    tracked = torch.tensor(4)
    update_running_stats(bn, 'running_mean', torch.ones(3), None, tracked)  # cumulative: 1/4
    torch.testing.assert_close(running, torch.full((3, ), 0.1 + 0.9 / 4))
    assert bn.running_mean is running  # eager: in place, the buffer keeps its identity


def test_update_running_stats_skips_non_finite_entries_without_sync():
    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    bn = nn.BatchNorm2d(3)
    running = bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    tracked = torch.tensor(2)
    with count_host_syncs() as syncs:
        finite = update_running_stats(bn, 'running_mean', torch.tensor([3.0, float('nan'),
                                                                        float('inf')]),
                                      None, tracked)
    assert syncs.total == 0  # before: num_batches_tracked.item() for momentum=None
    torch.testing.assert_close(running, torch.tensor([2.0, 2.0, 3.0]))
    assert finite.tolist() == [True, False, False]
    update_running_stats(bn, 'running_mean', torch.ones(3), None, 4)  # a Python count too
    torch.testing.assert_close(running, torch.tensor([1.75, 1.75, 2.5]))
