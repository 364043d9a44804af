"""SyncCBN: 2 gloo ranks x b images == CBN on one process with the 2b images.

Each rank runs the same iterations on its slice of one batch, with conv weights, γ and β
changed between iterations (in place, as an optimizer step: CBN sees new iterations and
compensates). The test process replays them with CBN on the whole batch and compares outputs,
input gradients, the ranks' summed parameter gradients, running statistics and the windows
(each rank keeps its own images' window; pooled by count they are CBN's).
"""
import contextlib
import copy

import pytest
import torch
from mmcv.cnn import build_norm_layer
from torch import nn

from mmnorm_plugin.norms.cbn import CBN, SyncCBN
from mmnorm_plugin.norms.iteration_clock import end_iteration

ITERS = 6  # buffer_num 3: the window fills and wraps
# (per-rank images, layer calls per iteration, CBN options)
SCENARIOS = {
    'even': ((2, 2), 1, dict()),
    'uneven_two_sites': ((3, 1), 2, dict(running_stats='batch', eps_outside_sqrt=True)),
    'empty_rank': ((2, 0), 1, dict(burnin_iters=2)),
}
SIZES = ((6, 6), (4, 4))  # input size of each call site


def _net(cls, options):
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False, groups=1).double()
    norm = cls(8, buffer_num=3, **options).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return conv, norm


def _data(it, site, total):
    gen = torch.Generator().manual_seed(1000 * it + site)
    h, w = SIZES[site]
    x = torch.randn(total, 3, h, w, generator=gen, dtype=torch.float64) * 2 + 0.5
    weights = torch.randn(total, 8, h, w, generator=gen, dtype=torch.float64)
    return x, weights


def _step(conv, norm, it):
    """The 'optimizer step' both sides apply: a fixed perturbation, in place, then the end of
    the iteration that an optimizer step signals."""
    gen = torch.Generator().manual_seed(7 + it)
    with torch.no_grad():
        for p in (conv.weight, norm.weight, norm.bias):
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    end_iteration()


def _run(cls, scenario, lo, hi, count_syncs=False):
    """Iterations on images [lo, hi) of every batch; per-iteration outputs and gradients."""
    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    sizes, sites, options = SCENARIOS[scenario]
    conv, norm = _net(cls, options)
    out = []
    for it in range(ITERS):
        with count_host_syncs() if count_syncs else contextlib.nullcontext() as syncs:
            out.append(_iteration(conv, norm, it, sites, sizes, lo, hi))
        out[-1]['host_syncs'] = dict(syncs.counts) if count_syncs else {}
        _step(conv, norm, it)
    return out, norm.state_dict()


def _iteration(conv, norm, it, sites, sizes, lo, hi):
    loss, xs, ys = 0, [], []
    for site in range(sites):
        x, weights = _data(it, site, sum(sizes))
        x = x[lo:hi].requires_grad_()
        y = norm(conv(x))
        loss = loss + (y * weights[lo:hi]).sum()
        xs.append(x)
        ys.append(y.detach())
    for p in (conv.weight, norm.weight, norm.bias):
        p.grad = None
    loss.backward()
    return dict(y=ys, gx=[x.grad for x in xs], gw=conv.weight.grad.clone(),
                gg=norm.weight.grad.clone(), gb=norm.bias.grad.clone())


def _rank_equivalence(rank, world):
    results = {}
    for scenario, (sizes, _, _) in SCENARIOS.items():
        lo = sum(sizes[:rank])
        results[scenario] = _run(SyncCBN, scenario, lo, lo + sizes[rank], count_syncs=True)
    results['amp'] = _run_amp(SyncCBN, 2 * rank, 2 * rank + 2)
    results['all_empty'] = _run_all_empty(rank)
    return results


def _run_all_empty(rank):
    """Two iterations, one in which every rank's batch is empty, one more iteration."""
    conv, norm = _net(SyncCBN, dict())
    states, outputs = [], []
    for it, n in enumerate((2, 2, 0, 2)):
        x = _data(it, 0, 4)[0][2 * rank:2 * rank + n].requires_grad_()
        y = norm(conv(x))
        y.sum().backward()
        outputs.append(y.detach())
        states.append({k: v.clone() for k, v in norm.state_dict().items()})
        _step(conv, norm, it)
    return dict(states=states, outputs=outputs)


def _run_amp(cls, lo, hi):
    """float32 layers, bfloat16 autocast (CPU AMP): statistics pooled in float32/float64."""
    torch.manual_seed(3)
    conv, norm = nn.Conv2d(3, 8, 3, padding=1, bias=False), cls(8)
    for it in range(3):
        x, weights = (t.float() for t in _data(it, 0, 4))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = norm(conv(x[lo:hi]))
        (y.float() * weights[lo:hi]).sum().backward()
        _step(conv, norm, it)
    return dict(y=y.float().detach(), state=norm.state_dict(), grad=conv.weight.grad)


def _pool_windows(states):
    """The ranks' windows pooled by element count (what CBN keeps for the whole batch)."""
    counts = torch.stack([s['hist_count'] for s in states]).double()  # (R, S, k)
    total = counts.sum(0)
    w = counts / total.clamp_min(1)
    mean = sum(w[r, ..., None] * s['hist_mean'] for r, s in enumerate(states))
    var = sum(w[r, ..., None] * (s['hist_var'] + (s['hist_mean'] - mean)**2)
              for r, s in enumerate(states))
    # derivatives: (S, G|C, k, P); weights per (S, k)
    wd = w[:, :, None, :, None]
    d_mean = sum(wd[r] * s['hist_mean_grad'] for r, s in enumerate(states))
    d_var = sum(wd[r] * (s['hist_var_grad'] + 2 * (s['hist_mean'] - mean).transpose(1, 2)[
        ..., None] * s['hist_mean_grad']) for r, s in enumerate(states))  # G == 1 here
    return dict(hist_count=total.long(), hist_mean=mean, hist_var=var, hist_mean_grad=d_mean,
                hist_var_grad=d_var)


@pytest.fixture(scope='module')
def ranks(run_ranks):
    return run_ranks(__file__, '_rank_equivalence')  # one launch (~8 s) for the module


@pytest.mark.parametrize('scenario', list(SCENARIOS))
def test_two_ranks_equal_cbn_on_the_whole_batch(ranks, scenario):
    sizes, sites, _ = SCENARIOS[scenario]
    reference, ref_state = _run(CBN, scenario, 0, sum(sizes))
    close = dict(rtol=1e-9, atol=1e-9)
    for it, ref in enumerate(reference):
        got = [r[scenario][0][it] for r in ranks]
        for site in range(sites):
            for key in ('y', 'gx'):
                torch.testing.assert_close(torch.cat([g[key][site] for g in got]),
                                           ref[key][site], **close, msg=f'{key} it {it}')
        for key in ('gw', 'gg', 'gb'):
            torch.testing.assert_close(got[0][key] + got[1][key], ref[key], **close,
                                       msg=f'{key} it {it}')
    states = [r[scenario][1] for r in ranks]
    for key in ('running_mean', 'running_var', 'num_batches_tracked', 'num_iters', 'hist_len',
                'hist_ptr'):
        torch.testing.assert_close(states[0][key], ref_state[key], **close, msg=key)
        torch.testing.assert_close(states[1][key], ref_state[key], **close, msg=key)
    pooled = _pool_windows(states)
    for key, value in pooled.items():
        torch.testing.assert_close(value, ref_state[key], **close, msg=key)


def test_bfloat16_autocast_pools_like_cbn_on_the_whole_batch(ranks):
    ref = _run_amp(CBN, 0, 4)
    for key in ('running_mean', 'running_var'):
        assert ranks[0]['amp']['state'][key].dtype == torch.float32
        torch.testing.assert_close(ranks[0]['amp']['state'][key], ranks[1]['amp']['state'][key],
                                   rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]['amp']['state'][key], ref['state'][key],
                                   rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(torch.cat([r['amp']['y'] for r in ranks]), ref['y'], rtol=2e-2,
                               atol=2e-2)
    # the conv's own backward runs in bfloat16: compare the whole gradient, not elements
    summed = ranks[0]['amp']['grad'] + ranks[1]['amp']['grad']
    assert (summed - ref['grad']).norm() / ref['grad'].norm() < 2e-2


def test_a_step_without_images_on_any_rank_leaves_the_statistics_alone(ranks):
    for rank in ranks:
        before, empty, after = rank['all_empty']['states'][1:]
        for key in ('running_mean', 'running_var', 'num_batches_tracked'):
            assert torch.equal(before[key], empty[key]), key
        assert empty['num_iters'] == before['num_iters'] + 1  # an iteration all the same
        assert after['num_batches_tracked'] == before['num_batches_tracked'] + 1
        assert torch.isfinite(after['running_var']).all()
        assert rank['all_empty']['outputs'][2].shape[0] == 0
        assert torch.isfinite(rank['all_empty']['outputs'][3]).all()


def test_one_all_reduce_forward_and_one_backward_per_layer_and_iteration(ranks):
    calls = sum(ITERS * sites * 2 for _, sites, _ in SCENARIOS.values()) + (3 + 4) * 2
    assert [r['_all_reduce_calls'] for r in ranks] == [calls, calls]


def test_bytes_per_layer_and_iteration_are_the_documented_ones(ranks):
    """Forward (k+1)(2C+1) float64 from the first window iteration on (unfilled slots travel
    with count 0: the message never changes size), backward 2C in the statistics' dtype
    (float64 here, a float64 model): the README's communication table."""
    c, k = 8, 3
    sizes = ranks[0]['_all_reduce_sizes'][:2 * ITERS]  # 'even': one site, no burn-in
    forward, backward = sizes[0::2], sizes[1::2]
    assert [n for n, _ in forward] == [(k + 1) * (2 * c + 1)] * ITERS
    assert {d for _, d in forward} == {torch.float64}
    assert backward == [(2 * c, torch.float64)] * ITERS
    assert ranks[1]['_all_reduce_sizes'] == ranks[0]['_all_reduce_sizes']


def test_a_synced_training_step_never_reads_a_tensor_back_to_the_host(ranks):
    for rank in ranks:
        for scenario in SCENARIOS:
            assert all(not step['host_syncs'] for step in rank[scenario][0]), scenario


def test_outside_a_process_group_synccbn_is_cbn():
    a, a_state = _run(CBN, 'uneven_two_sites', 0, 4)
    b, b_state = _run(SyncCBN, 'uneven_two_sites', 0, 4)
    for ra, rb in zip(a, b):
        for key in ('gw', 'gg', 'gb'):
            assert torch.equal(ra[key], rb[key])
        assert all(torch.equal(u, v) for u, v in zip(ra['y'] + ra['gx'], rb['y'] + rb['gx']))
    assert a_state.keys() == b_state.keys()
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)


def test_conversion_both_ways_keeps_parameters_and_state():
    conv, cbn = _net(CBN, dict(rho=0.5, running_stats='batch', max_call_sites=3))
    for it in range(4):
        cbn(conv(torch.randn(2, 3, 6, 6, dtype=torch.float64))).sum().backward()
        _step(conv, cbn, it)
    synced = SyncCBN.from_unsynced(cbn)
    assert type(synced) is SyncCBN and synced.weight is cbn.weight and synced.training
    assert (synced.buffer_num, synced.rho, synced.running_stats, synced.max_call_sites) == \
        (3, 0.5, 'batch', 3)
    state, synced_state = cbn.state_dict(), synced.state_dict()
    assert state.keys() == synced_state.keys() and 'hist_count' in state
    assert all(torch.equal(state[k], synced_state[k]) for k in state)
    back = synced.eval().to_unsynced()
    assert type(back) is CBN and not back.training and back.bias is cbn.bias
    assert all(torch.equal(state[k], v) for k, v in back.state_dict().items())
    # the two continue identically from the converted state
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    cbn2 = copy.deepcopy(cbn)
    synced2 = SyncCBN.from_unsynced(copy.deepcopy(cbn))
    assert torch.equal(cbn2(conv(x)), synced2(conv(x)))


def test_built_from_a_norm_cfg():
    name, layer = build_norm_layer(dict(type='SyncCBN', buffer_num=2), 16)
    assert name == 'bn' and type(layer) is SyncCBN and layer.buffer_num == 2
    assert 'process_group=None' in repr(layer)


def test_the_config_validator_knows_every_argument():
    from mmnorm_plugin.validation.norm_cfg import validate_norm_cfgs
    validate_norm_cfgs(dict(norm_cfg=dict(type='SyncCBN', buffer_num=2, rho=0.5)))
    with pytest.raises(TypeError, match="did you mean 'buffer_num'"):
        validate_norm_cfgs(dict(norm_cfg=dict(type='SyncCBN', bufer_num=2)))
