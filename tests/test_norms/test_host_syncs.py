"""No host synchronisation in a training step of any norm (issue 12, issue 10).

Counted with :mod:`mmnorm_plugin.benchmarks.sync_count` (a dispatch mode seeing every op below
autograd, backward included), which is what ``torch.cuda.set_sync_debug_mode`` would report
on a GPU. Before: MABN read ``int(num_batches_tracked)`` once per forward.
"""
import pytest
import torch
from torch import nn

from mmnorm_plugin.models.layers import CenConv2d
from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.bkn import BKN
from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.mabn import MABN
from mmnorm_plugin.benchmarks.sync_count import count_host_syncs

# phases short enough that the counted step runs each method's full path (MABN: SMA and
# free renorm; CBN: the window; BKN: a fused prior; BGN: momentum=None, the cumulative mean)
NORMS = [
    pytest.param(nn.BatchNorm2d, nn.Conv2d, id='BN'),
    pytest.param(lambda c: MABN(c, buffer_size=2, warmup_iters=2, renorm_hold_iters=3),
                 CenConv2d, id='MABN'),
    pytest.param(lambda c: MABN(c, buffer_size=2, warmup_iters=2, renorm_hold_iters=3,
                                momentum=None), CenConv2d, id='MABN-cumulative'),
    pytest.param(lambda c: BGN(c, num_groups=2, momentum=None), nn.Conv2d, id='BGN'),
    pytest.param(lambda c: BKN(c), nn.Conv2d, id='BKN'),
    pytest.param(lambda c: CBN(c, buffer_num=2, burnin_iters=1), nn.Conv2d, id='CBN',),
]


@pytest.mark.parametrize('norm, conv', NORMS)
def test_training_step_has_no_host_sync(norm, conv):
    model = nn.Sequential(
        conv(3, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(),
        conv(8, 8, 3, padding=1, bias=False), norm(8), nn.ReLU())
    for _ in range(5):  # warm-up: the first step may read the counters once
        model(torch.randn(2, 3, 6, 6)).sum().backward()
    with count_host_syncs() as syncs:
        model(torch.randn(2, 3, 6, 6)).square().mean().backward()
    assert syncs.total == 0, dict(syncs.counts)
