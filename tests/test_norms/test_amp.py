"""Every norm trains under CPU autocast with float32 statistics (issue 10 item 3).

bfloat16 is mmengine's CPU autocast dtype (``AmpOptimWrapper`` on CPU); float16 autocast also
runs on CPU in torch 2.13 and exercises the same code path as CUDA float16. Before the fix BGN
crashed: ``mixed dtype (CPU): expect parameter to have scalar type of Float``.
"""
import math

import pytest
import torch
from torch import nn

from mmnorm_plugin.models.layers import CenConv2d
from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.bkn import BKN
from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.mabn import MABN

# short phases so that 3 steps reach each method's cross-iteration path
NORMS = [
    pytest.param(lambda c: MABN(c, buffer_size=2, warmup_iters=1, renorm_hold_iters=2),
                 CenConv2d, id='MABN+CenConv2d'),
    pytest.param(lambda c: BGN(c, num_groups=4), nn.Conv2d, id='BGN'),
    pytest.param(lambda c: BKN(c), nn.Conv2d, id='BKN'),
    pytest.param(lambda c: CBN(c, buffer_num=2, burnin_iters=1), nn.Conv2d, id='CBN'),
    pytest.param(nn.BatchNorm2d, nn.Conv2d, id='BN'),
]


def small_net(norm, conv):
    return nn.Sequential(
        conv(3, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(),
        conv(8, 16, 3, stride=2, padding=1, bias=False), norm(16), nn.ReLU(),
        conv(16, 16, 3, padding=1, bias=False), norm(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('norm, conv', NORMS)
def test_trains_three_steps_under_cpu_autocast(norm, conv, dtype):
    torch.manual_seed(0)
    model = small_net(norm, conv)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    seen = []
    hook = lambda m, inp, out: seen.append((inp[0].dtype, out.dtype))  # noqa: E731
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(hook)
    for _ in range(3):
        x, labels = torch.randn(2, 3, 12, 12), torch.randint(0, 4, (2, ))
        with torch.autocast('cpu', dtype=dtype):
            loss = nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert math.isfinite(loss.item())
    assert seen and all(i == dtype and o == dtype for i, o in seen)  # autocast was active
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point():
            assert t.dtype == torch.float32, name  # statistics and parameters stay fp32
            assert torch.isfinite(t).all(), name
    # statistics moved (were updated from the low-precision input)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(not torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)


def test_bgn_autocast_statistics_match_float32():
    """The group statistics are taken in float32: close to the float32 run of the same input."""
    torch.manual_seed(0)
    layer = BGN(8, num_groups=2, momentum=1.0)
    ref = BGN(8, num_groups=2, momentum=1.0)
    x = torch.randn(2, 8, 6, 6) * 3 + 5
    x_low = x.bfloat16()
    ref(x_low.float())
    y = layer(x_low)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(layer.running_mean, ref.running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
