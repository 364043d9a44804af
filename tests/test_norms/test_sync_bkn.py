"""SyncBKN: BKN with every rank's batch in its statistics.

Two gloo ranks running a conv -> SyncBKN -> ReLU -> conv -> SyncBKN chain (the second layer has
a prior; the first receives gradients from it) must equal BKN in one process on the
concatenated batch, over iterations whose conv weights change, for equal, unequal and empty
per-rank batches, with exactly one all-reduce per layer in forward and one in backward.
"""
import io

import pytest
import torch
import torch.distributed as dist
from torch import nn

from mmnorm_plugin.norms import collectives
from mmnorm_plugin.norms.bkn import FUSED, NO_PRIOR, BKN, SyncBKN

# per-rank batch sizes of the scenarios run in one launch
SCENARIOS = {'equal': (2, 2), 'unequal': (3, 1), 'empty': (2, 0)}
ITERS, LR, HW = 3, 0.05, 6


def _net(cls):
    torch.manual_seed(7)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), cls(6), nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1, bias=True), cls(5)).double()


def _data(sizes, it):
    """The global batch of iteration ``it`` and the fixed loss weights, split per rank."""
    g = torch.Generator().manual_seed(1000 * it + sum(sizes))
    x = torch.randn(sum(sizes), 3, HW, HW, generator=g, dtype=torch.float64) * 2 + 0.5
    w = torch.randn(sum(sizes), 5, HW, HW, generator=g, dtype=torch.float64)
    return x.split(list(sizes)), w.split(list(sizes))


def _grad(t):
    return t.grad.clone() if t.grad is not None else torch.zeros_like(t)


def _snapshot(net, x, y):
    return dict(
        y=y.detach().clone(), dx=_grad(x),
        grads={n: _grad(p) for n, p in net.named_parameters()},
        running={n: b.clone() for n, b in net.state_dict().items()},
        status=[net[1].prior_status.item(), net[4].prior_status.item()])


def _sgd(net, grads):
    with torch.no_grad():
        for (_, p), g in zip(net.named_parameters(), grads):
            p.sub_(LR * g.view_as(p))
            p.grad = None


def _rank_scenarios(rank, world):
    """Every scenario on one rank; records the all-reduces of each phase (count, numel,
    dtype)."""
    reduce, log = dist.all_reduce, []

    def logging_all_reduce(tensor, *args, **kwargs):
        log.append((tensor.numel(), tensor.dtype))
        return reduce(tensor, *args, **kwargs)

    dist.all_reduce = logging_all_reduce
    out = {}
    try:
        for name, sizes in SCENARIOS.items():
            net, steps = _net(SyncBKN), []
            for it in range(ITERS):
                xs, ws = _data(sizes, it)
                x = xs[rank].clone().requires_grad_()
                log.clear()
                y = net(x)
                fwd = list(log)
                log.clear()
                (y * ws[rank]).sum().backward()
                step = _snapshot(net, x, y)
                step.update(fwd=fwd, bwd=list(log))
                steps.append(step)
                # identical SGD step on every rank with the summed gradients (one test-side
                # all-reduce, outside the logged phases)
                flat = torch.cat([_grad(p).reshape(-1) for p in net.parameters()])
                collectives.all_reduce_sum(flat)
                _sgd(net, flat.split([p.numel() for p in net.parameters()]))
            out[name] = steps

        # one value per channel on a rank is no error inside a group (the union has 3)
        layer = SyncBKN(4).double()
        layer(torch.randn(2 if rank == 0 else 1, 4, 1, 1, dtype=torch.float64))
        out['single_value_ok'] = True

        # no host synchronisation in a synced training step
        from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
        net = _net(SyncBKN)
        xs, ws = _data((2, 2), 0)
        for _ in range(2):  # warm-up
            (net(xs[rank]) * ws[rank]).sum().backward()
        with count_host_syncs() as syncs:
            (net(xs[rank]) * ws[rank]).sum().backward()
        out['host_syncs'] = dict(syncs.counts)

        # every rank empty: the state is left alone (as BKN's for an empty batch), gradients 0
        def state():
            return dict(buffers={k: v.clone() for k, v in net.state_dict().items()},
                        status=[net[i].prior_status.item() for i in (1, 4)],
                        nonfinite=[net[i].nonfinite_count.item() for i in (1, 4)])

        before = state()
        net.zero_grad(set_to_none=True)
        x = torch.zeros(0, 3, HW, HW, dtype=torch.float64, requires_grad=True)
        y = net(x)
        y.sum().backward()
        out['all_empty'] = dict(before=before, after=state(), shape=tuple(y.shape),
                                grads=[_grad(p) for p in net.parameters()])
    finally:
        dist.all_reduce = reduce
    return out


def _reference(sizes):
    """BKN in one process on the concatenated batches, same SGD steps."""
    net, steps = _net(BKN), []
    for it in range(ITERS):
        xs, ws = _data(sizes, it)
        x = torch.cat(xs).requires_grad_()
        y = net(x)
        (y * torch.cat(ws)).sum().backward()
        steps.append(_snapshot(net, x, y))
        _sgd(net, [p.grad for p in net.parameters()])
    return steps


def test_two_ranks_equal_bkn_on_the_concatenated_batch(run_ranks):
    results = run_ranks(__file__, '_rank_scenarios')
    close = dict(rtol=1e-5, atol=1e-5)
    layer_calls = 0
    for name, sizes in SCENARIOS.items():
        ref = _reference(sizes)
        for it in range(ITERS):
            r, ranks = ref[it], [res[name][it] for res in results]
            start = [0, sizes[0]]
            for rank, got in enumerate(ranks):
                sl = slice(start[rank], start[rank] + sizes[rank])
                torch.testing.assert_close(got['y'], r['y'][sl], **close)
                torch.testing.assert_close(got['dx'], r['dx'][sl], **close)
                for key, value in r['running'].items():
                    torch.testing.assert_close(got['running'][key], value, **close)
                assert got['status'] == r['status'] == [NO_PRIOR, FUSED], (name, it)
                # exactly one all-reduce per layer: forward 2C+1 float64, backward 2C
                assert got['fwd'] == [(2 * 6 + 1, torch.float64), (2 * 5 + 1, torch.float64)]
                assert sorted(got['bwd']) == [(2 * 5, torch.float64), (2 * 6, torch.float64)]
            for key, value in r['grads'].items():
                summed = sum(got['grads'][key] for got in ranks)
                torch.testing.assert_close(summed, value, **close, msg=f'{name} {it} {key}')
            layer_calls += 4
    for res in results:
        assert res['single_value_ok']
        assert res['host_syncs'] == {}
        empty = res['all_empty']
        assert empty['shape'] == (0, 5, HW, HW)
        torch.testing.assert_close(empty['after'], empty['before'], rtol=0, atol=0)
        assert empty['before']['status'] == [NO_PRIOR, FUSED]
        assert empty['after']['nonfinite'] == [0, 0]
        for g in empty['grads']:
            assert g.isfinite().all() and not g.any()
        # the layers' calls, one gradient sum per step, the single-value forward and the
        # 3 host-sync steps + the all-empty step (2 per forward, 2 per backward)
        assert res['_all_reduce_calls'] == layer_calls + 3 * ITERS + 1 + 4 * 4


def test_outside_a_group_it_is_bkn_bit_for_bit(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, 'all_reduce', lambda *a, **k: calls.append(a))
    nets = [_net(BKN), _net(SyncBKN)]
    for it in range(2):
        xs, ws = _data((2, 2), it)
        snaps = []
        for net in nets:
            x = torch.cat(xs).requires_grad_()
            y = net(x)
            (y * torch.cat(ws)).sum().backward()
            snaps.append(_snapshot(net, x, y))
            _sgd(net, [p.grad for p in net.parameters()])
        a, b = snaps
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert calls == [] and collectives.sync_world_size() == 1
    # an empty batch takes BKN's early return outside a group, a single value raises
    empty = torch.zeros(0, 6, 4, 4, dtype=torch.float64)
    assert nets[1][1](empty).shape == empty.shape
    with pytest.raises(ValueError, match='more than 1 value'):
        nets[1][1](torch.randn(1, 6, 1, 1, dtype=torch.float64))


def test_conversion_and_checkpoints_interchange():
    import mmcv.cnn

    bkn = BKN(8, eps=1e-4, momentum=None, prior_weight=0.7, gate_ratio=None,
              prior_mode='sample', prior_input='estimated').double()
    conv = nn.Conv2d(3, 8, 3, bias=False).double()
    for _ in range(2):
        bkn(conv(torch.randn(2, 3, 5, 5, dtype=torch.float64))).sum().backward()
    bkn.eval()
    state = {k: v.clone() for k, v in bkn.state_dict().items()}

    sync = SyncBKN.from_unsynced(bkn, process_group=None)
    assert type(sync) is SyncBKN and not sync.training and sync.process_group is None
    for attr in ('num_features', 'eps', 'momentum', 'affine', 'track_running_stats',
                 'prior_weight', 'gate_ratio', 'prior_mode', 'prior_input'):
        assert getattr(sync, attr) == getattr(bkn, attr), attr
    assert sync.weight is bkn.weight and sync.running_var is bkn.running_var  # shared
    assert sync.weight.dtype == torch.float64
    torch.testing.assert_close(sync.state_dict(), state, rtol=0, atol=0)
    back = sync.to_unsynced()
    assert type(back) is BKN and not back.training and back.prior_mode == 'sample'
    torch.testing.assert_close(back.state_dict(), state, rtol=0, atol=0)
    with pytest.raises(TypeError):
        SyncBKN.from_unsynced(nn.BatchNorm2d(8))

    # checkpoints load strictly both ways (same names)
    fresh = SyncBKN(8).double()
    buf = io.BytesIO()
    torch.save(bkn.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf), strict=True)
    torch.testing.assert_close(fresh.state_dict(), state, rtol=0, atol=0)
    plain = BKN(8).double()
    plain.load_state_dict(fresh.state_dict(), strict=True)
    torch.testing.assert_close(plain.state_dict(), state, rtol=0, atol=0)

    # config building, and the eval layer scripts as BKN's does
    name, layer = mmcv.cnn.build_norm_layer(dict(type='SyncBKN'), 64)
    assert type(layer) is SyncBKN and layer.num_features == 64 and name == 'bn'
    layer.eval()
    x = torch.randn(2, 64, 3, 3)
    torch.testing.assert_close(torch.jit.script(layer)(x), layer(x))
