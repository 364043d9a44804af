"""What every norm shares (norms/base.py): the running-statistics EMA, eval-mode folding."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmnorm_plugin.models.layers import CenConv2d
from mmnorm_plugin.norms.base import NormBase, update_running_stats
from mmnorm_plugin.norms.bgn import BGN, SyncBGN
from mmnorm_plugin.norms.bkn import BKN, SyncBKN
from mmnorm_plugin.norms.cbn import CBN, SyncCBN
from mmnorm_plugin.norms.mabn import MABN

C = 4


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


NORMS = {
    'CBN': lambda: CBN(C, buffer_num=2, eps_outside_sqrt=True),
    'SyncCBN': lambda: SyncCBN(C, buffer_num=2),
    'MABN': lambda: MABN(C, buffer_size=2, warmup_iters=1, renorm_hold_iters=2),
    'BGN': lambda: BGN(C, num_groups=2),
    'SyncBGN': lambda: SyncBGN(C, num_groups=2),
    'BKN': lambda: BKN(C),
    'SyncBKN': lambda: SyncBKN(C),
}


@pytest.mark.parametrize('name', sorted(NORMS))
def test_every_norm_is_a_norm_base_and_folds_into_its_eval_statistics(name):
    layer = NORMS[name]()
    assert isinstance(layer, NormBase)
    conv = CenConv2d(3, C, 3, padding=1) if name == 'MABN' else nn.Conv2d(3, C, 3, padding=1)
    model = nn.Sequential(conv, layer)
    for _ in range(3):
        model(torch.randn(2, 3, 5, 5)).square().mean().backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
    layer.eval()
    x = torch.randn(2, C, 5, 5)
    mean, var = layer.eval_statistics()
    assert mean.shape == var.shape == (C, )
    expected = F.batch_norm(x, mean, var, layer.weight, layer.bias, False, 0.0, layer.eps)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)


def test_eval_statistics_need_running_statistics():
    with pytest.raises(ValueError, match=r'BKN\(track_running_stats=False\)'):
        BKN(C, track_running_stats=False).eval_statistics()
