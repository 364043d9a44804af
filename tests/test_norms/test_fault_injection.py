"""One NaN/Inf batch in the middle of training, then clean batches (issue 10).

The run with the bad batch must end where the run without it ends: every output and every
persistent buffer finite and within tolerance (the ring buffers after they have cycled). The
training loop skips the optimizer step when the gradients are not finite, as a loss scaler
(``GradScaler``, mmengine's ``AmpOptimWrapper``) does; what is tested is that the norms' own
state does not carry the bad batch forward.
"""
import copy
import math

import pytest
import torch
from torch import nn

from mmnorm_plugin.models.layers import CenConv2d
from mmnorm_plugin.norms.bgn import BGN
from mmnorm_plugin.norms.bkn import BKN
from mmnorm_plugin.norms.cbn import CBN
from mmnorm_plugin.norms.mabn import MABN

RING = 3
# (norm, conv, tolerance). BGN and BKN skip the bad step's statistics entirely: the runs are
# bit-identical (measured). MABN's window advances with the step (its slot repeats the
# previous chi2/Psi), so the next m - 1 windows differ slightly from the clean run's: measured
# max |difference| 2e-3 on outputs and 3.6e-3 on the state after the ring has cycled.
NORMS = [
    # warm-up and renorm hold end before the bad batch, so both runs are in the same phase
    pytest.param(lambda c: MABN(c, buffer_size=RING, warmup_iters=2, renorm_hold_iters=3),
                 CenConv2d, 0.02, id='MABN'),
    pytest.param(lambda c: BGN(c, num_groups=4), nn.Conv2d, 0.0, id='BGN'),
    pytest.param(lambda c: BKN(c), nn.Conv2d, 0.0, id='BKN'),
    # CBN: the windows of the RING steps after the bad one hold one batch fewer, so the weights
    # move slightly differently from then on (measured max |difference| 0.035 on outputs)
    pytest.param(lambda c: CBN(c, buffer_num=RING, burnin_iters=2), nn.Conv2d, 0.05, id='CBN'),
]
CLEAN_BEFORE, CLEAN_AFTER = 6, 12


def _net(norm, conv):
    return nn.Sequential(
        conv(3, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(),
        conv(8, 8, 3, stride=2, padding=1, bias=False), norm(8), nn.ReLU(),
        conv(8, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def _train(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    outputs = []
    for x, labels in batches:
        out = model(x)
        loss = nn.functional.cross_entropy(out, labels)
        opt.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if all(torch.isfinite(g).all() for g in grads):
            opt.step()  # a loss scaler skips the step otherwise
        outputs.append(out.detach())
    return outputs


def _batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(3, 3, 10, 10, generator=g)
    out = []
    for _ in range(n):
        labels = torch.randint(0, 3, (2, ), generator=g)
        out.append((protos[labels] + 0.5 * torch.randn(2, 3, 10, 10, generator=g), labels))
    return out


def _sorted_ring(t):
    return t.sort(dim=0).values  # a ring holds the same entries at other slots


_CBN_RINGS = dict(hist_mean=0, hist_var=0, hist_mean_proj=0, hist_var_proj=0, hist_mean_grad=1,
                  hist_var_grad=1)


def _oldest_first(state):
    """CBN windows reordered oldest to newest: the bad step advanced each ring by one slot."""
    out = {k: v for k, v in state.items() if not k.endswith('hist_ptr')}
    for key, ptr in state.items():
        if not key.endswith('hist_ptr'):
            continue
        prefix = key[:-len('hist_ptr')]
        for name, dim in _CBN_RINGS.items():
            if prefix + name in state:
                out[prefix + name] = torch.stack([
                    torch.roll(site, -int(p), dims=dim)
                    for site, p in zip(state[prefix + name], ptr)])
    return out


@pytest.mark.parametrize('bad', [math.nan, math.inf])
@pytest.mark.parametrize('norm, conv, tol', NORMS)
def test_training_recovers_from_one_bad_batch(norm, conv, tol, bad):
    torch.manual_seed(0)
    model = _net(norm, conv)
    clean_model = copy.deepcopy(model)
    batches = _batches(CLEAN_BEFORE + CLEAN_AFTER, seed=1)
    bad_x = batches[0][0].clone()
    bad_x[0, :, 2:4, 2:4] = bad  # a patch: non-finite activations in every channel
    bad_batches = batches[:CLEAN_BEFORE] + [(bad_x, batches[0][1])] + batches[CLEAN_BEFORE:]

    clean_out = _train(clean_model, batches)
    bad_out = _train(model, bad_batches)
    assert not torch.isfinite(bad_out[CLEAN_BEFORE]).all()  # the bad batch did reach the norms
    after = bad_out[CLEAN_BEFORE + 1:]
    assert all(torch.isfinite(o).all() for o in after)
    # after the rings have cycled the two runs agree
    for i in range(RING + 1, CLEAN_AFTER):
        torch.testing.assert_close(after[i], clean_out[CLEAN_BEFORE + i], rtol=tol, atol=tol)

    state = _oldest_first(model.state_dict())
    clean_state = _oldest_first(clean_model.state_dict())
    for key, value in state.items():
        ref = clean_state[key]
        if key.endswith('num_batches_tracked') or key.endswith('num_iters'):
            assert value.item() == ref.item() + 1  # the bad step counts as a step, like BN's
            continue
        assert torch.isfinite(value).all(), key
        if key.endswith('_history'):
            value, ref = _sorted_ring(value), _sorted_ring(ref)
        torch.testing.assert_close(value, ref, rtol=tol, atol=tol, msg=key)
    model.eval()
    x = batches[0][0]
    torch.testing.assert_close(model(x), clean_model.eval()(x), rtol=tol, atol=tol)


DETECTOR_CONFIGS = [
    pytest.param('mabn', id='MABN'),
    pytest.param('bgn', id='BGN'),
    pytest.param('bkn', id='BKN'),
    pytest.param('cbn', id='CBN'),
]
SHORT_PHASES = dict(MABN=dict(buffer_size=RING, warmup_iters=2, renorm_hold_iters=3),
                    CBN=dict(buffer_num=RING, burnin_iters=2))


def _shorten_phases(cfg):
    if isinstance(cfg, dict):
        if cfg.get('type') in SHORT_PHASES and 'requires_grad' in cfg:
            cfg.update(SHORT_PHASES[cfg['type']])
        for value in cfg.values():
            _shorten_phases(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _shorten_phases(value)


@pytest.mark.slow
@pytest.mark.parametrize('method', DETECTOR_CONFIGS)
def test_tiny_detector_recovers_from_one_bad_batch(method):
    """The demo Faster R-CNN with the norm everywhere, one NaN image batch mid-training."""
    import os.path as osp

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs

    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'demo',
                                   f'faster-rcnn_r18-w16_fpn_{method}_tiny-coco.py'))
    init_default_scope('mmdet')
    model_cfg = cfg.model
    _shorten_phases(model_cfg)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    clean_model = copy.deepcopy(model)
    batches = []
    for i in range(CLEAN_BEFORE + 8):
        torch.manual_seed(100 + i)
        batches.append(demo_mm_inputs(batch_size=2, image_shapes=[(3, 64, 64)] * 2,
                                      num_items=[2, 1], num_classes=4))
    order = list(range(len(batches)))
    bad_order = order[:CLEAN_BEFORE] + [-1] + order[CLEAN_BEFORE:]

    def run(net, sequence):
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.005, momentum=0.9)
        losses = []
        for idx in sequence:
            torch.manual_seed(idx)  # the samplers draw the same RoIs in both runs
            data = net.data_preprocessor(copy.deepcopy(batches[max(idx, 0)]), True)
            if idx < 0:  # a NaN patch in one image, after normalization
                data['inputs'][0, :, 20:30, 20:30] = float('nan')
            loss, _ = net.parse_losses(net(**data, mode='loss'))
            opt.zero_grad()
            loss.backward()
            grads = [p.grad for p in net.parameters() if p.grad is not None]
            if math.isfinite(loss.item()) and all(torch.isfinite(g).all() for g in grads):
                opt.step()
            losses.append(loss.item())
        return losses

    clean_losses = run(clean_model, order)
    bad_losses = run(model, bad_order)
    assert not math.isfinite(bad_losses[CLEAN_BEFORE])
    after = bad_losses[CLEAN_BEFORE + 1:]
    assert all(math.isfinite(v) for v in after), after
    for got, ref in zip(after[RING + 1:], clean_losses[CLEAN_BEFORE + RING + 1:]):
        assert got == pytest.approx(ref, rel=0.05, abs=0.02)
    state = _oldest_first(model.state_dict())
    clean_state = _oldest_first(clean_model.state_dict())
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        assert torch.isfinite(value).all(), key
        ref = clean_state[key]
        if key.endswith(('_grad', '_proj')):
            continue  # CBN's derivatives (and their projections) drift with the weights
        if key.endswith('_history'):
            value, ref = _sorted_ring(value), _sorted_ring(ref)
        # CBN windows hold statistics of RoIs the drifted weights sampled (measured: 4 of 192
        # entries beyond 5 %, largest 0.17 on a value of 3.0)
        tol = 0.1 if '.hist_' in key else 0.05
        torch.testing.assert_close(value, ref, rtol=tol, atol=tol, msg=key)
