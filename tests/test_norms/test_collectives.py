"""The cross-rank moment pooling every synced layer uses (collectives.all_reduce_moments)."""
import torch

from mmnorm_plugin.norms.collectives import all_reduce_moments, sync_world_size
from mmnorm_plugin.norms.statistics import batch_moments

SIZES = (3, 0)  # rank 1 has an empty batch


def _batch(rank, n):
    torch.manual_seed(100 + rank)
    return torch.randn(n, 5, 4, 3, dtype=torch.float64) * 3 + 1e3  # |mu|/sigma ~ 300


def _rank_pool(rank, world):
    x = _batch(rank, SIZES[rank])
    m = x.numel() // x.shape[1]
    if m:
        var, mean = batch_moments(x)
    else:  # an empty rank's moments are garbage: weight 0 must hide them
        mean = var = torch.full((5, ), float('nan'), dtype=torch.float64)
    count = torch.full((1, ), float(m), dtype=torch.float64)
    total, mean, var = all_reduce_moments(count, mean, var)
    # two entries at once, one of them empty everywhere: (2, C) with counts (2, 1)
    counts2 = torch.tensor([[float(m)], [0.0]], dtype=torch.float64)
    stacked = all_reduce_moments(counts2, torch.stack((mean, mean)), torch.stack((var, var)))
    return dict(total=total, mean=mean, var=var, stacked=stacked, world=sync_world_size())


def test_pooled_moments_are_those_of_the_union_with_unequal_and_empty_ranks(run_ranks):
    results = run_ranks(__file__, '_rank_pool')
    union = torch.cat([_batch(r, n) for r, n in enumerate(SIZES)])
    var, mean = torch.var_mean(union, dim=(0, 2, 3), unbiased=False)
    for res in results:
        assert res['world'] == 2 and res['_all_reduce_calls'] == 2
        assert res['total'].item() == union.numel() // 5
        torch.testing.assert_close(res['mean'], mean, rtol=0, atol=1e-9)
        torch.testing.assert_close(res['var'], var, rtol=1e-9, atol=0)
        total, mean2, var2 = res['stacked']
        assert total[1].item() == 0 and mean2[1].isnan().all() and var2[1].isnan().all()
        torch.testing.assert_close(mean2[0], res['mean'])
    torch.testing.assert_close(results[0]['var'], results[1]['var'], rtol=0, atol=0)


def test_outside_a_process_group_the_world_is_one():
    assert sync_world_size() == 1
