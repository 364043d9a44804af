"""Estimation-shift measurement on tiny models with known statistics."""
import math

import pytest
import torch
from torch import nn

from mmnorm_plugin.analysis.estimation_shift import (estimation_shift, format_shift_table,
                                                     plot_shift)

C, N_BATCHES = 3, 4
MU = torch.tensor([1.0, -2.0, 0.5])
VAR = torch.tensor([4.0, 0.25, 1.0])


def _batches_with_exact_moments():
    """N batches whose pooled per-channel mean/variance are exactly MU/VAR (and whose batch
    means differ, so the pooled variance is not the mean within-batch variance)."""
    x = torch.randn(N_BATCHES * 2, C, 5, 5, dtype=torch.float64)
    x += torch.arange(N_BATCHES).repeat_interleave(2).view(-1, 1, 1, 1)  # distinct batch means
    flat = x.transpose(0, 1).reshape(C, -1)
    x = (x - flat.mean(1).view(1, C, 1, 1)) / flat.std(1, unbiased=False).view(1, C, 1, 1)
    x = x * VAR.double().sqrt().view(1, C, 1, 1) + MU.double().view(1, C, 1, 1)
    return [b.float() for b in x.split(2)]


def _bn(mean, var):
    bn = nn.BatchNorm2d(C, eps=1e-12)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    return bn


def test_single_layer_known_shift():
    delta = torch.tensor([0.5, 0.0, -1.0])
    ratio = torch.tensor([2.0, 1.0, 0.5])
    model = nn.Sequential(_bn(MU + delta, VAR * ratio))
    model.train()
    (rec, ) = estimation_shift(model, _batches_with_exact_moments())
    assert model.training  # mode restored
    assert rec.name == '0' and rec.num_features == C and rec.num_values == N_BATCHES * 2 * 25
    assert rec.mean_l2 == pytest.approx(float(delta.norm()), rel=1e-5)
    assert rec.var_l2 == pytest.approx(float((VAR * ratio - VAR).norm()), rel=1e-5)
    assert rec.mean_shift == pytest.approx(
        math.sqrt(float(((delta / VAR.sqrt())**2).mean())), rel=1e-5)
    assert rec.var_shift == pytest.approx(math.sqrt(float(((ratio - 1)**2).mean())), rel=1e-5)
    # running statistics were not touched (eval mode)
    torch.testing.assert_close(model[0].running_mean, MU + delta)


def test_exact_estimates_give_zero_shift():
    (rec, ) = estimation_shift(nn.Sequential(_bn(MU, VAR)), _batches_with_exact_moments())
    assert rec.mean_l2 < 1e-5 and rec.var_l2 < 1e-5
    assert rec.mean_shift < 1e-5 and rec.var_shift < 1e-5


def test_shift_accumulates_through_bn_and_a_batch_free_norm_blocks_it():
    """The paper's point: a downstream BN with *correct-in-isolation* estimates inherits the
    upstream error; an instance/group norm in between removes it."""
    delta = torch.tensor([1.0, 0.5, -0.5])
    # BN2's running stats are the statistics BN1's output would have with exact estimates
    stacked = nn.Sequential(_bn(MU + delta, VAR), _bn(torch.zeros(C), torch.ones(C)))
    first, second = estimation_shift(stacked, _batches_with_exact_moments())
    assert first.mean_shift == pytest.approx(float((delta / VAR.sqrt()).pow(2).mean().sqrt()),
                                             rel=1e-5)
    # BN1 outputs mean -delta/std, variance 1: BN2 now sees exactly that offset
    assert second.mean_l2 == pytest.approx(float((delta / VAR.sqrt()).norm()), rel=1e-4)
    assert second.var_shift < 1e-4
    blocked = nn.Sequential(_bn(MU + delta, VAR), nn.GroupNorm(C, C, eps=1e-12),
                            _bn(torch.zeros(C), torch.ones(C)))
    first, second = estimation_shift(blocked, _batches_with_exact_moments())
    assert first.mean_shift > 0.3
    assert second.name == '2' and second.mean_l2 < 1e-5 and second.var_shift < 1e-4


def test_custom_forward_fn_table_and_plot(tmp_path):
    model = nn.Sequential(nn.Conv2d(C, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    calls = []

    def forward_fn(batch):
        calls.append(1)
        return model(batch['inputs'])

    records = estimation_shift(model, [dict(inputs=b) for b in _batches_with_exact_moments()],
                               forward_fn=forward_fn)
    assert len(calls) == N_BATCHES and [r.name for r in records] == ['1', '3']
    assert [r.depth for r in records] == [0, 1]
    table = format_shift_table(records)
    assert table.splitlines()[0].split()[:3] == ['depth', 'layer', 'C'] and len(
        table.splitlines()) == 4
    path = plot_shift(records, str(tmp_path / 'shift.png'), title='tiny')
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_no_bn_layer_is_an_error():
    with pytest.raises(ValueError, match='no BatchNorm'):
        estimation_shift(nn.Sequential(nn.GroupNorm(1, C)), _batches_with_exact_moments())


def test_cli_on_tiny_coco(tmp_path):
    """tools/analysis/estimation_shift.py end to end: config -> model -> val batches -> outputs."""
    import importlib.util
    import json
    import os.path as osp

    from mmnorm_plugin.datasets.tiny_coco import make_tiny_coco

    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    data = tmp_path / 'tiny_coco'
    make_tiny_coco(str(data), num_train=1, num_val=3, image_size=96)
    spec = importlib.util.spec_from_file_location(
        'estimation_shift_cli', osp.join(root, 'tools', 'analysis', 'estimation_shift.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out_dir = tmp_path / 'out'
    records = cli.main([
        osp.join(root, 'configs', 'demo', 'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'), 'none',
        '--num-batches', '2', '--out-dir', str(out_dir), '--cfg-options',
        f'val_dataloader.dataset.data_root={data}/', 'model.backbone.type=XBNResNet',
        'model.backbone.bfn_cfg.type=GN', 'model.backbone.bfn_cfg.num_groups=4'])
    names = [r.name for r in records]
    # XBNBlock: the stem norm and each BasicBlock's first norm are GroupNorm, so not measured
    assert 'backbone.bn1' not in names and 'backbone.layer1.0.bn2' in names
    assert not any(n.endswith('.bn1') for n in names if n.startswith('backbone.layer'))
    assert any(n.startswith('neck.') for n in names)  # FPN BNs are measured too
    assert all(r.num_values > 0 for r in records)
    assert (out_dir / 'estimation_shift.png').stat().st_size > 0
    saved = json.loads((out_dir / 'estimation_shift.json').read_text())
    assert [r['name'] for r in saved] == names


def test_a_checkpoint_loads_as_our_tools_load_it(tmp_path):
    """measure_config's checkpoint, and a Pretrained file of the config, load through the
    guarded scheme: a checkpoint whose tensors differ from its checksum is refused naming the
    file (mmengine's own load_checkpoint would evaluate it silently)."""
    import os.path as osp

    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from mmnorm_plugin.analysis.estimation_shift import measure_config
    from mmnorm_plugin.checkpoint.safety import add_checksum
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'demo',
                                   'faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'))
    register_all_modules(init_default_scope=True)
    state = MODELS.build(cfg.model).state_dict()
    checkpoint = add_checksum(dict(state_dict=state, meta=dict()))
    key = next(k for k in state if k.endswith('conv1.weight'))
    checkpoint['state_dict'][key] = state[key] + 1  # changed after the checksum was taken
    tampered = tmp_path / 'tampered.pth'
    torch.save(checkpoint, tampered)
    for ckpt, init_cfg in ((str(tampered), None),
                           (None, dict(type='Pretrained', checkpoint=str(tampered)))):
        cfg.model.init_cfg = init_cfg
        with pytest.raises(Exception) as err:
            measure_config(cfg, ckpt, num_batches=1)
        assert str(tampered) in str(err.value)
