"""PreciseNormHook / recalibrate_norms: running statistics become the exact average of the
per-batch statistics at the training batch size; nothing else changes."""
import copy

import pytest
import torch
import torch.nn as nn

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.engine import recalibrate_norms
from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.bkn import BKN


def _model(norm):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), norm(8), nn.ReLU(), nn.Conv2d(8, 8, 3), norm(8))


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    # per-image offsets: single-image statistics differ strongly from image to image
    return [torch.randn(1, 3, 10, 10, generator=g) * 2 + torch.randn(1, 3, 1, 1, generator=g) * 3
            for _ in range(n)]


def test_bn_running_stats_become_the_exact_average_of_batch_statistics():
    model = _model(nn.BatchNorm2d)
    batches = _batches(6)
    used = recalibrate_norms(model, iter(batches), model, num_batches=4)
    assert used == 4
    conv = model[0]
    with torch.no_grad():
        stats = [(conv(x).mean((0, 2, 3)), conv(x).var((0, 2, 3), unbiased=True))
                 for x in batches[:4]]
    torch.testing.assert_close(model[1].running_mean, torch.stack([m for m, _ in stats]).mean(0))
    torch.testing.assert_close(model[1].running_var, torch.stack([v for _, v in stats]).mean(0))
    assert model[1].momentum == 0.1 and model.training


@pytest.mark.parametrize('norm', [BGN, BKN])
def test_plugin_norms_keep_every_other_buffer_and_every_weight(norm):
    model = _model(lambda c: norm(c, num_groups=4) if norm is BGN else norm(c))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x in _batches(3, seed=5):  # some training: running stats are an EMA now
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    before = copy.deepcopy(model.state_dict())
    model.eval()
    recalibrate_norms(model, iter(_batches(5)), model, num_batches=5)
    after = model.state_dict()
    assert not model.training
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(('running_mean', 'running_var')) for k in changed)
    # the same batches give the same statistics: recalibration is deterministic
    again = copy.deepcopy(model)
    recalibrate_norms(again, iter(_batches(5)), again, num_batches=5)
    for k in after:
        torch.testing.assert_close(again.state_dict()[k], after[k])


def test_frozen_layers_and_bad_arguments():
    model = _model(nn.BatchNorm2d)
    model[1].eval()  # norm_eval: mmdet keeps frozen BN in eval mode while training

    class Keep(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def train(self, mode=True):
            super().train(mode)
            self.inner[1].eval()
            return self

    wrapped = Keep(model)
    before = model[1].running_mean.clone()
    recalibrate_norms(wrapped, iter(_batches(2)), wrapped.inner, num_batches=2)
    assert torch.equal(model[1].running_mean, before)
    assert not torch.equal(model[4].running_mean, torch.zeros(8))
    with pytest.raises(ValueError, match='num_batches'):
        recalibrate_norms(model, iter([]), model, num_batches=0)
    with pytest.raises(ValueError, match='no batch'):
        recalibrate_norms(model, iter([]), model, num_batches=3)
