"""torch.compile: every norm trains two SGD steps with the same losses (and state) as eager.

mmengine's ``compile=True`` wraps the model with ``torch.compile``; a norm that Dynamo cannot
trace falls back to eager at a graph break, which must not change the computation. The number
of graph breaks per norm (``torch._dynamo.explain``) is reported in the README; it is not
asserted here, only the numerical equivalence.
"""
import copy

import pytest
import torch
from torch import nn

from mmnorm_plugin.models.layers.cen_conv import CenConv2d
from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.bkn import FUSED, BatchKalmanNorm2d
from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.mabn import MABN

CASES = {
    # window active from the first step (no burn-in), so the compensated path is compiled
    'CBN': (lambda c: CBN(c, buffer_num=2), nn.Conv2d),
    # SMA and renormalization from the first step; MABN is meant for weight-centred convs
    'MABN': (lambda c: MABN(c, buffer_size=2, warmup_iters=0, renorm_hold_iters=0), CenConv2d),
    'BGN': (lambda c: BGN(c, num_groups=2), nn.Conv2d),
    'BKN': (lambda c: BatchKalmanNorm2d(c), nn.Conv2d),
}
PARAMS = ['CBN', 'MABN', 'BGN', 'BKN']


def _net(name):
    norm, conv = CASES[name]
    return nn.Sequential(conv(3, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(),
                         conv(8, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def _train(model, forward, inputs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for x in inputs:
        opt.zero_grad()
        loss = forward(x).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def _compare(name, backend):
    torch.manual_seed(0)
    eager = _net(name)
    compiled_model = copy.deepcopy(eager)
    inputs = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    torch._dynamo.reset()
    compiled = torch.compile(compiled_model, backend=backend)
    expected = _train(eager, eager, inputs)
    got = _train(compiled_model, compiled, inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    # the state a checkpoint carries evolves identically
    for (key, a), b in zip(eager.state_dict().items(), compiled_model.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(a, b), key
    if name == 'BKN':  # the layer chain survives compilation (Dynamo breaks at grad_fn)
        assert int(compiled_model[4].prior_status) == FUSED
    torch._dynamo.reset()


@pytest.mark.parametrize('name', PARAMS)
def test_two_steps_under_torch_compile_aot_eager(name):
    """Dynamo + AOTAutograd without code generation: seconds, runs everywhere."""
    _compare(name, 'aot_eager')


@pytest.mark.slow
@pytest.mark.parametrize('name', PARAMS)
def test_two_steps_under_torch_compile_inductor(name):
    """The default backend (what mmengine's ``compile=True`` uses); needs a C++ compiler."""
    _compare(name, 'inductor')
