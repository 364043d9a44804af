"""SyncBGN: BGN with group statistics pooled over the ranks of a process group.

The synced layer on rank r with batch x_r must be BGN in one process on cat(x_0, x_1):
outputs and input gradients slice for slice, parameter gradients summed over the ranks (what
DDP does), running statistics identical everywhere. One gloo launch (``_rank_train``) runs every
scenario; the tests below compare its records with a single-process BGN reference.
"""
import pytest
import torch
import torch.distributed as dist
from mmcv.cnn import build_norm_layer
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmnorm_plugin.norms import bgn as bgn_module
from mmnorm_plugin.norms.bgn import BGN, SyncBGN

C_IN, C, G, HW = 3, 8, 4, (5, 4)
ITERS = 3
LR = 0.1
# (per-rank batch sizes, momentum, which group: 'world' = None, 'explicit' = new_group([0, 1]))
SCENARIOS = {
    'equal': ((2, 2), 0.1, 'world'),
    'unequal': ((3, 1), None, 'explicit'),  # momentum None: cumulative average, 1/t on device
    'empty-rank': ((2, 0), 0.1, 'world'),
}


def _model(norm, momentum, **kwargs):
    """conv -> norm -> ReLU -> conv -> norm in float64, identical for every norm class."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(C_IN, C, 3, padding=1), norm(C, momentum=momentum,
                                                                   num_groups=G, **kwargs),
                          nn.ReLU(), nn.Conv2d(C, C, 3, padding=1),
                          norm(C, momentum=momentum, num_groups=G, **kwargs)).double()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in (model[1], model[4]):  # gamma != 1 so that the gamma-weighted sums matter
            layer.weight.copy_(torch.rand(C, generator=gen, dtype=torch.float64) + 0.5)
            layer.bias.copy_(torch.randn(C, generator=gen, dtype=torch.float64))
    return model


def _data(name, step):
    """The whole batch of an iteration and the fixed loss weights (one tensor, sliced)."""
    sizes = SCENARIOS[name][0]
    gen = torch.Generator().manual_seed(1000 * list(SCENARIOS).index(name) + step)
    x = torch.randn(sum(sizes), C_IN, *HW, generator=gen, dtype=torch.float64) * 2 + 0.5
    w = torch.randn(sum(sizes), C, *HW, generator=gen, dtype=torch.float64)
    return x, w


def _slice(name, rank, t):
    sizes = SCENARIOS[name][0]
    start = sum(sizes[:rank])
    return t[start:start + sizes[rank]]


def _step(model, x, w):
    x = x.clone().requires_grad_()
    y = model(x)
    (y * w).sum().backward()
    return y.detach(), x.grad


def _sgd(model, grads):
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p.sub_(LR * g)
            p.grad = None


def _norm_state(model):
    return {f'{i}.{k}': v.clone() for i in (1, 4) for k, v in model[i].state_dict().items()}


# ------------------------------------------------------------------ one launch, every scenario
def _rank_train(rank, world):
    from mmnorm_plugin.benchmarks.sync_count import count_host_syncs
    calls = [0]
    outer = dist.all_reduce

    def counting(*args, **kwargs):
        calls[0] += 1
        return outer(*args, **kwargs)

    dist.all_reduce = counting
    explicit = dist.new_group([0, 1])
    singles = [dist.new_group([r]) for r in range(world)]  # every rank creates every group
    out = {}
    try:
        for name, (_, momentum, which) in SCENARIOS.items():
            group = explicit if which == 'explicit' else None
            model = _model(SyncBGN, momentum, process_group=group)
            rec = dict(y=[], xgrad=[], grads=[], fwd_calls=[], bwd_calls=[], host_syncs=[])
            for step in range(ITERS):
                x, w = (_slice(name, rank, t) for t in _data(name, step))
                x = x.clone().requires_grad_()
                calls[0] = 0
                with count_host_syncs() as syncs:
                    y = model(x)
                    rec['fwd_calls'].append(calls[0])
                    calls[0] = 0
                    (y * w).sum().backward()
                rec['bwd_calls'].append(calls[0])
                rec['host_syncs'].append(dict(syncs.counts))
                rec['y'].append(y.detach())
                rec['xgrad'].append(x.grad)
                local = [p.grad.clone() for p in model.parameters()]
                rec['grads'].append(local)
                # the optimizer step on the summed gradients (DDP's job), identical on each rank
                flat = torch.cat([g.flatten() for g in local])
                dist.all_reduce(flat)
                summed, offset = [], 0
                for g in local:
                    summed.append(flat[offset:offset + g.numel()].view_as(g))
                    offset += g.numel()
                _sgd(model, summed)
            if name == 'equal':
                # every rank empty: both collectives still run (no hang), state left alone
                before = _norm_state(model)
                calls[0] = 0
                y, _ = _step(model, *(t[:0] for t in _data(name, 0)))
                rec['all_empty'] = dict(
                    calls=calls[0], shape=tuple(y.shape), before=before,
                    nonfinite=[int(model[i].nonfinite_count) for i in (1, 4)])
                model.zero_grad(set_to_none=True)
            rec['state'] = _norm_state(model)
            # eval: running statistics, no communication
            model.eval()
            calls[0] = 0
            x, _ = _data(name, ITERS)
            rec['eval_y'] = model(_slice(name, rank, x)).detach()
            rec['eval_calls'] = calls[0]
            out[name] = rec
        # a group of one rank is no group: BGN on the local batch, no collective
        x, w = (_slice('equal', rank, t) for t in _data('equal', 0))
        single = _model(SyncBGN, 0.1, process_group=singles[rank])
        calls[0] = 0
        y, xgrad = _step(single, x, w)
        out['single'] = dict(y=y, xgrad=xgrad, calls=calls[0], state=_norm_state(single))
        # autocast: a bfloat16 input into float32 state pools float32 statistics (ranks unequal)
        gen = torch.Generator().manual_seed(7 + rank)
        x = (torch.randn(1 + 2 * rank, C, *HW, generator=gen) * 3 + 2).bfloat16()
        amp, fp32 = SyncBGN(C, num_groups=G), SyncBGN(C, num_groups=G)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            amp(x.requires_grad_()).float().sum().backward()
        fp32(x.detach().float())
        out['amp'] = dict(amp=amp.state_dict(), fp32=fp32.state_dict(),
                          grad_finite=bool(x.grad.isfinite().all()))
        # an eval-mode layer holding a real process group still scripts
        layer = SyncBGN(C, num_groups=G, process_group=explicit).eval()
        out['scripted'] = torch.equal(torch.jit.script(layer)(x.float()), layer(x.float()))
    finally:
        dist.all_reduce = outer
    return out


@pytest.fixture(scope='module')
def ranks(run_ranks):
    """The records of the single gloo launch, shared by the module's tests."""
    return run_ranks(__file__, '_rank_train')


def _reference(name):
    """BGN in one process on the concatenated batches, same SGD steps."""
    model = _model(BGN, SCENARIOS[name][1])
    rec = dict(y=[], xgrad=[], grads=[])
    for step in range(ITERS):
        y, xgrad = _step(model, *_data(name, step))
        grads = [p.grad.clone() for p in model.parameters()]
        rec['y'].append(y)
        rec['xgrad'].append(xgrad)
        rec['grads'].append(grads)
        _sgd(model, grads)
    rec['state'] = _norm_state(model)
    model.eval()
    rec['eval_y'] = model(_data(name, ITERS)[0]).detach()
    return rec


def _close(got, want, msg):
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m: f'{msg}: {m}')


@pytest.mark.parametrize('name', list(SCENARIOS))
def test_synced_layer_is_bgn_on_the_union_of_the_ranks_batches(ranks, name):
    results = [r[name] for r in ranks]
    ref = _reference(name)
    sizes = SCENARIOS[name][0]
    for step in range(ITERS):
        for rank, res in enumerate(results):
            assert res['y'][step].shape[0] == sizes[rank]
            _close(res['y'][step], _slice(name, rank, ref['y'][step]), f'y rank {rank}')
            _close(res['xgrad'][step], _slice(name, rank, ref['xgrad'][step]),
                   f'input grad rank {rank}')
        # conv and norm parameter gradients: each rank's are local sums, DDP adds them
        for i, want in enumerate(ref['grads'][step]):
            _close(sum(res['grads'][step][i] for res in results), want, f'param grad {i}')
        if 0 in sizes:  # the empty rank's output is empty and contributes no gradient
            empty = results[sizes.index(0)]
            assert all(not g.any() for g in empty['grads'][step])
    for key, want in ref['state'].items():
        # all_reduce gives every rank the same sums: running statistics bitwise identical
        assert torch.equal(results[0]['state'][key], results[1]['state'][key]), key
        if key.endswith('num_batches_tracked'):
            assert int(want) == int(results[0]['state'][key]) == ITERS
        else:
            _close(results[0]['state'][key], want, key)
    for rank, res in enumerate(results):
        assert res['eval_calls'] == 0
        _close(res['eval_y'], _slice(name, rank, ref['eval_y']), f'eval y rank {rank}')


def test_one_all_reduce_per_layer_in_forward_and_in_backward_without_host_syncs(ranks):
    results = ranks
    for res in results:
        for name in SCENARIOS:
            rec = res[name]
            assert rec['fwd_calls'] == [2] * ITERS, (name, rec['fwd_calls'])  # 2 layers
            assert rec['bwd_calls'] == [2] * ITERS, (name, rec['bwd_calls'])
            assert rec['host_syncs'] == [{}] * ITERS, (name, rec['host_syncs'])
        # per scenario: 2 + 2 per iteration, 1 gradient sum per iteration (the test's SGD);
        # the all-empty step: 2 + 2; autocast: 1 + 1, and 1 for the float32 forward
        assert res['_all_reduce_calls'] == len(SCENARIOS) * ITERS * 5 + 4 + 3


def test_all_ranks_empty_still_communicate_and_leave_the_state_alone(ranks):
    for res in ranks:
        empty = res['equal']['all_empty']
        assert empty['calls'] == 4 and empty['shape'] == (0, C, *HW)
        assert empty['nonfinite'] == [0, 0]  # all-empty is not a non-finite statistic
        for key, value in empty['before'].items():
            assert torch.equal(res['equal']['state'][key], value), key


def test_a_group_of_one_rank_is_local_bgn(ranks):
    results = ranks
    for rank, res in enumerate(results):
        single = res['single']
        assert single['calls'] == 0
        model = _model(BGN, 0.1)
        x, w = (_slice('equal', rank, t) for t in _data('equal', 0))
        y, xgrad = _step(model, x, w)
        assert torch.equal(single['y'], y) and torch.equal(single['xgrad'], xgrad)
        for key, value in _norm_state(model).items():
            assert torch.equal(single['state'][key], value), key


def test_autocast_and_torchscript_inside_a_group(ranks):
    results = ranks
    for res in results:
        amp = res['amp']
        assert amp['grad_finite'] and res['scripted']
        for key in ('running_mean', 'running_var'):
            torch.testing.assert_close(amp['amp'][key], amp['fp32'][key], rtol=1e-6, atol=1e-6)
            assert torch.equal(amp['amp'][key], results[0]['amp']['amp'][key])


# ------------------------------------------------------------------ no process group
def test_outside_a_group_it_is_bgn_bit_for_bit(monkeypatch):
    assert not dist.is_initialized()
    calls = []
    for op in ('all_reduce', 'all_gather', 'all_gather_into_tensor', 'broadcast'):
        monkeypatch.setattr(dist, op, lambda *a, _op=op, **k: calls.append(_op))
    for momentum in (0.1, None):
        ref, synced = _model(BGN, momentum), _model(SyncBGN, momentum)
        for step in range(ITERS):
            x, w = _data('equal', step)
            if step == 1:
                x, w = x[:0], w[:0]  # an empty batch: empty output, state untouched
            y_ref, g_ref = _step(ref, x, w)
            y, g = _step(synced, x, w)
            assert torch.equal(y, y_ref) and torch.equal(g, g_ref)
            for p, q in zip(synced.parameters(), ref.parameters()):
                assert torch.equal(p.grad, q.grad)
            _sgd(ref, [p.grad for p in ref.parameters()])
            _sgd(synced, [p.grad for p in synced.parameters()])
        state, state_ref = _norm_state(synced), _norm_state(ref)
        for key, value in state_ref.items():
            assert torch.equal(state[key], value), key
        assert int(state['1.num_batches_tracked']) == ITERS - 1
    assert calls == []


def test_single_value_per_group_raises_outside_a_group():
    with pytest.raises(ValueError, match='SyncBGN: expected more than 1 value'):
        SyncBGN(4, num_groups=4)(torch.randn(1, 4, 1, 1))


def test_eval_mode_torchscript_matches_eager():
    layer = SyncBGN(C, num_groups=G)
    for _ in range(2):
        layer(torch.randn(2, C, 5, 5) * 2 + 1)
    layer.eval()
    scripted = torch.jit.script(layer)
    x = torch.randn(3, C, 5, 5)
    torch.testing.assert_close(scripted(x), layer(x), rtol=0, atol=0)
    assert scripted(x[:0]).shape == (0, C, 5, 5)
    scripted.train()
    with pytest.raises(Exception, match='ignored'):  # training is eager-only, as for BGN
        scripted(x)


# ------------------------------------------------------------------ conversion, checkpoints
def _trained(cls, **kwargs):
    layer = cls(C, num_groups=G, **kwargs).double()
    layer(torch.randn(2, C, 3, 3, dtype=torch.float64)).sum().backward()
    return layer


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def test_from_unsynced_and_to_unsynced_keep_everything():
    bgn = _trained(BGN, momentum=None).eval()
    bgn.bias.requires_grad_(False)
    group = object()  # stands for a process group: only stored
    synced = SyncBGN.from_unsynced(bgn, process_group=group)
    assert type(synced) is SyncBGN and synced.process_group is group
    assert not synced.training and synced.num_groups == G and synced.momentum is None
    assert synced.weight is bgn.weight and synced.running_var is bgn.running_var  # shared
    assert synced.weight.requires_grad and not synced.bias.requires_grad
    assert synced.weight.grad is bgn.weight.grad is not None
    _assert_same_state(synced, bgn)
    assert synced._layer_name == 'SyncBGN'
    back = synced.to_unsynced()
    assert type(back) is BGN and not back.training and back.weight is bgn.weight
    _assert_same_state(back, bgn)
    assert not back.bias.requires_grad
    x = torch.randn(2, C, 3, 3, dtype=torch.float64)
    assert torch.equal(back(x), bgn(x)) and torch.equal(synced(x), bgn(x))
    # training mode and the options without parameters/buffers carry over too
    bare = SyncBGN.from_unsynced(BGN(C, num_groups=G, affine=False, track_running_stats=False))
    assert bare.training and bare.weight is None and bare.running_mean is None
    assert all(t.device.type == 'cpu' for t in bare.buffers())
    with pytest.raises(TypeError):
        SyncBGN.from_unsynced(nn.BatchNorm2d(C))


@pytest.mark.parametrize('loader', ['torch', 'mmengine'])
def test_checkpoints_load_both_ways_strictly(loader):
    def load(module, state):
        if loader == 'torch':
            module.load_state_dict(state, strict=True)
        else:
            mmengine_load_state_dict(module, state, strict=True)
        return module

    bgn, synced = _trained(BGN), _trained(SyncBGN, momentum=0.3)
    _assert_same_state(load(SyncBGN(C, num_groups=G).double(), bgn.state_dict()), bgn)
    _assert_same_state(load(BGN(C, num_groups=G).double(), synced.state_dict()), synced)


def test_built_from_an_mmcv_norm_cfg():
    name, layer = build_norm_layer(dict(type='SyncBGN', num_groups=8), 64)
    assert name == 'bn' and type(layer) is SyncBGN and isinstance(layer, _BatchNorm)
    assert layer.eps == 1e-5 and layer.process_group is None
    assert layer.running_mean.shape == (8, ) and layer.weight.shape == (64, )
    assert 'SyncBGN' in bgn_module.__all__
