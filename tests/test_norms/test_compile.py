"""torch.compile(fullgraph=True): every norm traces without a graph break and trains as eager.

mmengine's ``compile=True`` wraps the model with ``torch.compile``. ``fullgraph=True`` turns any
graph break into an error, so compiling at all asserts "0 breaks". The compiled copy then trains
several SGD steps next to the eager model: same losses and same state buffers (running
statistics, CBN windows, MABN rings, counters). The steps cross each method's phase changes
(CBN's burn-in, MABN's warm-up, SMA and renorm hold), and after the first steps no step may
compile a new graph: nothing a step decides is a Python value that Dynamo would specialize on.

Setup for the layers that read the autograd graph in eager mode: the convs are tapped
(``tap_convolutions``: CBN's producing conv, BKN's prior) and one eager step records BKN's
layer chain before compiling.
"""
import copy

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from mmnorm_plugin.models.layers.cen_conv import CenConv2d
from mmnorm_plugin.norms.bgn import BGN, SyncBGN
from mmnorm_plugin.norms.bkn import FUSED, BKN, SyncBKN
from mmnorm_plugin.norms.cbn import CBN, SyncCBN
from mmnorm_plugin.norms.conv_origin import tap_convolutions
from mmnorm_plugin.norms.mabn import MABN

STEPS = 6  # compiled steps, after one eager step
CASES = {
    # burn-in ends during the compiled steps: the window path is compiled from then on
    'CBN': (lambda c: CBN(c, buffer_num=2, burnin_iters=2), nn.Conv2d),
    'SyncCBN': (lambda c: SyncCBN(c, buffer_num=2, burnin_iters=2), nn.Conv2d),
    # warm-up, SMA and renorm hold all change during the compiled steps (tensor conditions)
    'MABN': (lambda c: MABN(c, buffer_size=2, warmup_iters=2, renorm_hold_iters=4), CenConv2d),
    'BGN': (lambda c: BGN(c, num_groups=2, momentum=None), nn.Conv2d),
    'SyncBGN': (lambda c: SyncBGN(c, num_groups=2), nn.Conv2d),
    'BKN': (lambda c: BKN(c), nn.Conv2d),
    'SyncBKN': (lambda c: SyncBKN(c), nn.Conv2d),
}
NAMES = sorted(CASES)


def _net(name):
    norm, conv = CASES[name]
    return nn.Sequential(conv(3, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(),
                         conv(8, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def _train(model, forward, inputs, after_step=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step, x in enumerate(inputs):
        opt.zero_grad()
        loss = forward(x).square().mean()
        loss.backward()
        opt.step()  # (also ends CBN's iteration)
        losses.append(loss.detach())
        if after_step is not None:
            after_step(step)
    return torch.stack(losses)


def _compare(name, backend):
    torch.manual_seed(0)
    eager = _net(name)
    tap_convolutions(eager)
    inputs = [torch.randn(2, 3, 8, 8) for _ in range(STEPS + 1)]
    _train(eager, eager, inputs[:1])  # one eager step: BKN records its layer chain
    compiled_model = copy.deepcopy(eager)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(compiled_model, backend=backend, fullgraph=True)
    graphs = []
    expected = _train(eager, eager, inputs[1:])
    got = _train(compiled_model, compiled, inputs[1:],
                 lambda step: graphs.append(counters['stats']['unique_graphs']))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the state a checkpoint carries evolves identically
    state, ref = compiled_model.state_dict(), eager.state_dict()
    assert list(state) == list(ref)
    for key, a in ref.items():
        if a.is_floating_point():
            torch.testing.assert_close(state[key], a, rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(state[key], a), key
    # one graph serves every later step (no per-step specialization)
    assert graphs[-1] == graphs[STEPS // 2] and graphs[-1] <= 4, graphs
    if name.endswith('BKN'):  # the replayed layer chain gave the second layer its prior
        assert int(compiled_model[4].prior_status) == FUSED
    torch._dynamo.reset()


@pytest.mark.parametrize('name', NAMES)
def test_trains_as_eager_under_fullgraph_aot_eager(name):
    """Dynamo + AOTAutograd without code generation: seconds, runs everywhere."""
    _compare(name, 'aot_eager')


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_trains_as_eager_under_fullgraph_inductor(name):
    """The default backend (what mmengine's ``compile=True`` uses); needs a C++ compiler."""
    _compare(name, 'inductor')


def test_compiling_without_the_prerequisites_says_what_to_do(monkeypatch):
    from mmnorm_plugin.norms import cbn as cbn_module
    torch._dynamo.reset()
    cbn = nn.Sequential(nn.Conv2d(3, 4, 3), CBN(4, buffer_num=2))
    bkn = nn.Sequential(nn.Conv2d(3, 4, 3), BKN(4), nn.ReLU(), nn.Conv2d(4, 4, 3), BKN(4))
    x = torch.randn(2, 3, 8, 8)
    with monkeypatch.context() as m:  # (other tests of this process tapped their models)
        m.setattr(cbn_module, 'convolutions_tapped', lambda: False)
        with pytest.raises(Exception, match='tap_convolutions'):
            torch.compile(cbn, backend='aot_eager', fullgraph=True)(x)
    tap_convolutions(bkn)
    with pytest.raises(Exception, match='train one eager step'):
        torch.compile(bkn, backend='aot_eager', fullgraph=True)(x)
    torch._dynamo.reset()
