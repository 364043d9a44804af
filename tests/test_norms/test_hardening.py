"""Persistent state that bad batches, mismatched checkpoints and user errors cannot corrupt.

Issue 10 items 1, 4, 5, 6 and 9 for MABN, BGN and BKN (CBN's parts are tested in
test_cbn.py). The AMP item is in test_amp.py, the fault-injection loop in
test_fault_injection.py, the host-sync count in test_host_syncs.py.
"""
import copy
import io
import math
import warnings

import pytest
import torch
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from torch import nn

from mmnorm_plugin.norms import input_checks, reporting
from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.bkn import BKN
from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.mabn import MABN

NORMS = {
    'MABN': lambda c: MABN(c, buffer_size=3, warmup_iters=2, renorm_hold_iters=4),
    'BGN': lambda c: BGN(c, num_groups=2),
    'BKN': lambda c: BKN(c),
}


def _state(layer):
    return {k: v.clone() for k, v in layer.state_dict().items()}


def _assert_same_state(layer, before):
    after = layer.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def _trained(name, c=8, steps=3):
    torch.manual_seed(0)
    layer = NORMS[name](c)
    for _ in range(steps):
        layer(torch.randn(2, c, 5, 5) * 2 + 1).sum().backward()
    return layer


@pytest.fixture
def fresh_warnings(monkeypatch):
    """warn_once remembers keys per process; start each test with none used."""
    monkeypatch.setattr(reporting, '_warned', set())


# ------------------------------------------------------------------ item 1: MABN non-finite
@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_mabn_recovers_from_one_nonfinite_batch(bad, fresh_warnings):
    """Before: the bad chi2 entered R after the renorm hold and every later output was NaN."""
    torch.manual_seed(0)
    layer = MABN(4, buffer_size=3, warmup_iters=2, renorm_hold_iters=4)
    for t in range(1, 16):
        x = torch.randn(2, 4, 5, 5)
        if t == 6:
            x[0, 1, 0, 0] = bad
        x.requires_grad_()
        y = layer(x)
        y.sum().backward()
        if t > 6:
            assert torch.isfinite(y).all(), f'iteration {t}'
            assert torch.isfinite(x.grad).all(), f'iteration {t}'
    # channel 1 skipped its chi2 (forward) and its Psi (backward) once each
    assert layer.nonfinite_count.item() == 2
    with pytest.warns(UserWarning, match='2 training step.* non-finite statistics'):
        state = layer.state_dict()  # said once, off the hot path (saving or mode switch)
    for name, buf in state.items():
        assert torch.isfinite(buf.float()).all(), name
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        layer.eval()  # once only


def test_mabn_nonfinite_channel_keeps_r_and_window_of_others():
    """Only the affected channel skips: the others update R exactly as without the NaN."""
    torch.manual_seed(0)
    a = MABN(3, buffer_size=2, warmup_iters=0, renorm_hold_iters=0, momentum=0.4)
    b = copy.deepcopy(a)
    x = torch.randn(2, 3, 4, 4)
    x_bad = x.clone()
    x_bad[:, 2] = math.nan
    r_before = a.running_var.clone()
    a(x)
    b(x_bad)
    torch.testing.assert_close(b.running_var[:2], a.running_var[:2])
    assert torch.equal(b.running_var[2], r_before[2])
    assert torch.equal(b.chi2_history[1, :2], a.chi2_history[1, :2])
    assert torch.equal(b.chi2_history[1, 2], b.chi2_history[0, 2])  # the previous slot


# ----------------------------------------------------------- item 4: another window size
def _mabn_trained_at_scale_3(buffer_size, iters=12):
    torch.manual_seed(0)
    src = MABN(4, buffer_size=buffer_size, warmup_iters=0, renorm_hold_iters=0, momentum=0.4)
    for _ in range(iters):
        src(torch.randn(4, 4, 6, 6) * 3).sum().backward()
    return src


@pytest.mark.parametrize('loader', ['mmengine_non_strict', 'torch_strict'])
def test_mabn_checkpoint_with_another_window_restarts_it(loader, fresh_warnings):
    """Before: non-strict loading skipped the rings but kept the count: the SMA averaged
    empty slots (output std ~2.8 instead of 1) and dragged R down; strict loading raised."""
    src = _mabn_trained_at_scale_3(buffer_size=4)
    dst = MABN(4, buffer_size=8, warmup_iters=0, renorm_hold_iters=1000)
    with pytest.warns(UserWarning, match='buffer_size=4, this layer has buffer_size=8'):
        if loader == 'torch_strict':
            dst.load_state_dict(src.state_dict())
        else:
            mmengine_load_state_dict(dst, src.state_dict(), strict=False)
    assert dst.num_batches_tracked.item() == 0
    assert not dst.chi2_history.any() and not dst.psi_history.any()
    assert torch.equal(dst.running_var, src.running_var)  # R is kept
    y = dst(torch.randn(8, 4, 8, 8) * 3)
    assert abs(y.std().item() - 1) < 0.05
    # R (~9) moves by momentum * (9 - R) ~ 0.01, not toward 9/8 (by ~0.16)
    assert (dst.running_var - src.running_var).abs().max() < 0.05


def test_mabn_window_of_another_width_is_refused_untouched():
    src = _mabn_trained_at_scale_3(buffer_size=4)
    state = src.state_dict()
    state['chi2_history'] = torch.zeros(4, 5)
    dst = _trained('MABN', c=4)
    before = _state(dst)
    with pytest.raises(RuntimeError, match=r'chi2_history of shape \(4, 5\) cannot belong to '
                       r'a MABN\(4\)'):
        dst.load_state_dict(state)
    _assert_same_state(dst, before)


# ------------------------------------------------ item 5: BN checkpoints, failed loads
def test_mabn_loads_bn_checkpoint_strictly_and_restarts(fresh_warnings):
    bn = nn.BatchNorm2d(4)
    bn.running_var.fill_(4.0)
    bn.num_batches_tracked.fill_(500)
    layer = _trained('MABN', c=4)
    result = layer.load_state_dict(bn.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert layer.num_batches_tracked.item() == 0
    assert torch.equal(layer.running_var, bn.running_var)
    assert not layer.chi2_history.any()
    y = layer(torch.randn(2, 4, 5, 5) * 2)  # warm-up: current statistics, no empty slots
    assert abs(y.std().item() - 1) < 0.1


@pytest.mark.parametrize('name', sorted(NORMS))
@pytest.mark.parametrize('loader', ['torch', 'mmengine_non_strict'])
def test_failed_load_leaves_the_layer_untouched(name, loader):
    """Before: torch copied every entry that fit (and MABN zeroed running_mean and the
    counter) before reporting the one that did not."""
    layer = _trained(name)
    before = _state(layer)
    bad = {k: v.clone() for k, v in layer.state_dict().items()}
    bad['weight'] = torch.randn(8)
    bad['running_mean'] = torch.randn(bad['running_mean'].shape)
    bad['num_batches_tracked'] = torch.tensor(1000)
    bad['running_var'] = torch.ones(5)  # does not fit
    if name == 'MABN':  # a BN-style checkpoint: the rings would have been restarted
        del bad['chi2_history'], bad['psi_history']
    if loader == 'torch':
        with pytest.raises(RuntimeError, match='size mismatch for running_var'):
            layer.load_state_dict(bad)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            mmengine_load_state_dict(layer, bad, strict=False)  # logs, does not raise
    _assert_same_state(layer, before)
    # and the layer still trains from where it was
    layer(torch.randn(2, 8, 5, 5)).sum().backward()
    assert layer.num_batches_tracked.item() == before['num_batches_tracked'].item() + 1


@pytest.mark.parametrize('name', sorted(NORMS))
def test_load_missing_a_required_key_copies_nothing(name):
    layer = _trained(name)
    before = _state(layer)
    partial = {k: torch.zeros_like(v) for k, v in layer.state_dict().items() if k != 'bias'}
    with pytest.raises(RuntimeError, match='Missing key.*bias'):
        layer.load_state_dict(partial, strict=True)
    _assert_same_state(layer, before)
    # whole or nothing: torch's non-strict load reports the key and skips the layer
    assert layer.load_state_dict(partial, strict=False).missing_keys == ['bias']
    _assert_same_state(layer, before)


@pytest.mark.parametrize('name', sorted(NORMS))
def test_round_trip_and_counter_follow_the_buffer(name):
    """The layers count from num_batches_tracked as loaded or written by the user."""
    layer = _trained(name, steps=5)
    fresh = NORMS[name](8)
    fresh(torch.randn(2, 8, 5, 5)).sum().backward()
    fresh.load_state_dict(layer.state_dict())
    fresh(torch.randn(2, 8, 5, 5)).sum().backward()
    assert fresh.num_batches_tracked.item() == 6
    fresh.num_batches_tracked.fill_(41)
    fresh(torch.randn(2, 8, 5, 5)).sum().backward()
    assert fresh.num_batches_tracked.item() == 42


def test_mabn_counter_selects_the_slot_after_a_user_write():
    layer = MABN(2, buffer_size=4, warmup_iters=0, renorm_hold_iters=0)
    layer(torch.randn(2, 2, 3, 3))  # t = 1, slot 1
    layer.num_batches_tracked.fill_(6)
    x = torch.randn(2, 2, 3, 3)
    layer(x)  # t = 7, slot 3
    torch.testing.assert_close(layer.chi2_history[3], (x * x).mean((0, 2, 3)))


# ------------------------------------------------------ item 6: one value per statistic
@pytest.mark.parametrize('layer, shape', [
    (BGN(4, num_groups=4), (1, 4, 1, 1)),  # N*C/G*H*W == 1
    (BKN(4), (1, 4, 1, 1)),
    (MABN(4), (1, 4, 1, 1)),
])
def test_one_value_per_statistic_raises_like_bn(layer, shape):
    """Before: BKN and BGN output the bias with zero gradient and pulled running_var to 0."""
    before = _state(layer)
    with pytest.raises(ValueError, match='more than 1 value per statistic'):
        layer(torch.randn(shape, requires_grad=True))
    _assert_same_state(layer, before)
    layer.eval()(torch.randn(shape))  # inference is fine, as for BN


@pytest.mark.parametrize('layer, shape', [
    (BGN(4, num_groups=2), (1, 4, 1, 1)),  # 2 channels per group
    (BGN(4, num_groups=4), (2, 4, 1, 1)),
    (BKN(4), (1, 4, 1, 2)),
])
def test_two_values_per_statistic_train(layer, shape):
    layer(torch.randn(shape, requires_grad=True)).sum().backward()


# --------------------------------------------------------------- item 9: dtype, TorchScript
@pytest.mark.parametrize('name', sorted(NORMS))
def test_float64_input_into_float32_layer_raises(name):
    """Before: MABN and BKN silently kept float32 statistics of a float64 input."""
    layer = NORMS[name](4)
    before = _state(layer)
    with pytest.raises(ValueError, match='holds its statistics in torch.float32 but got a '
                       'torch.float64 input'):
        layer(torch.randn(2, 4, 3, 3, dtype=torch.float64))
    _assert_same_state(layer, before)
    layer.double()(torch.randn(2, 4, 3, 3, dtype=torch.float64))  # converted: fine


SCRIPTABLE = [pytest.param(lambda c: NORMS[n](c), id=n) for n in sorted(NORMS)] + [
    pytest.param(lambda c: CBN(c, buffer_num=2), id='CBN',),
]


@pytest.mark.parametrize('make', SCRIPTABLE)
def test_eval_mode_torchscript_matches_eager(make):
    """Before: scripting failed for every norm ('Unknown type name nn.Module')."""
    layer = make(4)
    for _ in range(3):
        layer(torch.randn(2, 4, 5, 5) * 2 + 1)
    layer.eval()
    scripted = torch.jit.script(layer)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(scripted(x), layer(x))
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(x), layer(x))
    with pytest.raises(Exception, match='4-D NCHW|expected 4D input'):
        scripted(torch.randn(4, 5))
    scripted.train()
    with pytest.raises(Exception, match='ignored'):  # training is eager-only
        scripted(x)


def test_check_nchw_message_matches_check_input_4d():
    scripted = torch.jit.script(input_checks.check_nchw)
    for x in (torch.zeros(2, 4), torch.zeros(1, 3, 2, 2)):
        with pytest.raises(ValueError) as eager:
            input_checks.check_input_4d(nn.BatchNorm2d(4), x)
        with pytest.raises(Exception) as script:
            scripted(x, 4, 'BatchNorm2d')
        assert str(eager.value) in str(script.value)


def test_cenconv_mabn_block_scripts_in_eval():
    from mmnorm_plugin.models.layers import CenConv2d
    block = nn.Sequential(CenConv2d(3, 4, 3, padding=1, bias=False),
                          MABN(4, buffer_size=2, warmup_iters=1, renorm_hold_iters=1),
                          nn.ReLU())
    for _ in range(3):
        block(torch.randn(2, 3, 6, 6)).sum().backward()
    block.eval()
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(torch.jit.script(block)(x), block(x))
