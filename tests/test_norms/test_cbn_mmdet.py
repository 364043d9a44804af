"""CBN as a drop-in ``norm_cfg`` in mmcv/mmdet modules, and the burn-in hook."""
import warnings
from types import SimpleNamespace

import pytest
import torch
from mmcv.cnn import ConvModule, build_norm_layer
from torch import nn

from mmnorm_plugin.engine import CBNBurnInHook
from mmnorm_plugin.norms.cbn import CBN

CBN_CFG = dict(type='CBN', requires_grad=True, buffer_num=2)


def _cbn_layers(module):
    return [m for m in module.modules() if isinstance(m, CBN)]


def _train_steps(module, make_input, steps=3):
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a CBN that cannot find its conv warns: fail
        for _ in range(steps):
            out = module(make_input())
            outs = out if isinstance(out, (tuple, list)) else (out, )
            loss = sum(o.float().square().mean() if o.numel() else o.sum() for o in outs)
            loss.backward()
            opt.step()
            opt.zero_grad()
    return outs


def _assert_all_compensated(module, expected_layers, steps=3):
    layers = _cbn_layers(module)
    assert len(layers) == expected_layers
    for layer in layers:
        assert layer.num_iters == steps
        assert layer.hist_len == min(steps, layer.buffer_num)
        # the producing conv was found: derivative history allocated and non-zero
        assert layer.hist_var_grad.numel() > 0 and layer.hist_var_grad.abs().sum() > 0


def test_build_norm_layer_from_root_registry():
    name, layer = build_norm_layer(dict(type='CBN', buffer_num=4, burnin_iters=10), 8)
    assert name == 'bn' and isinstance(layer, CBN)
    assert layer.eps == 1e-5 and layer.buffer_num == 4 and layer.burnin_iters == 10
    name, layer = build_norm_layer(dict(type='CBN', requires_grad=False), 8, postfix=2)
    assert name == 'bn2' and not layer.weight.requires_grad
    # the optimizer constructor treats it as a norm (norm_decay_mult applies)
    assert isinstance(layer, nn.modules.batchnorm._BatchNorm)


def test_conv_module():
    module = ConvModule(3, 8, 3, padding=1, norm_cfg=CBN_CFG)
    assert module.norm_name == 'bn' and module.conv.bias is None
    _train_steps(module, lambda: torch.randn(2, 3, 8, 8))
    _assert_all_compensated(module, 1)


def test_resnet_stem_bottleneck_downsample():
    from mmdet.models.backbones import ResNet
    model = ResNet(depth=50, base_channels=4, norm_cfg=CBN_CFG, norm_eval=False,
                   frozen_stages=-1, out_indices=(0, 1, 2, 3))
    model.init_weights()
    assert model.layer1[0].norm3.weight.abs().sum() == 0  # zero_init_residual still applies
    assert isinstance(model.layer1[0].downsample[1], CBN)
    model.train()
    _train_steps(model, lambda: torch.randn(1, 3, 64, 64))
    _assert_all_compensated(model, 1 + 16 * 3 + 4)


def test_resnet_norm_eval_and_frozen_stages_freeze_cbn():
    from mmdet.models.backbones import ResNet
    model = ResNet(depth=50, base_channels=4, norm_cfg=CBN_CFG, norm_eval=True,
                   frozen_stages=1)
    model.train()
    assert all(not m.training for m in _cbn_layers(model))
    model(torch.randn(1, 3, 32, 32))
    assert all(m.num_iters == 0 and m.num_batches_tracked == 0 for m in _cbn_layers(model))


def test_resnet_loads_batchnorm_checkpoint_strictly():
    from mmdet.models.backbones import ResNet
    bn_model = ResNet(depth=50, base_channels=4)
    cbn_model = ResNet(depth=50, base_channels=4, norm_cfg=CBN_CFG)
    result = cbn_model.load_state_dict(bn_model.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_fpn():
    from mmdet.models.necks import FPN
    neck = FPN(in_channels=[8, 16], out_channels=8, num_outs=3, norm_cfg=CBN_CFG)
    _train_steps(neck, lambda: (torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)))
    _assert_all_compensated(neck, 4)  # 2 lateral + 2 output convs


@pytest.mark.parametrize('num_rois', [5, 0])
def test_shared4conv1fc_bbox_head(num_rois):
    from mmdet.models.roi_heads.bbox_heads import Shared4Conv1FCBBoxHead
    head = Shared4Conv1FCBBoxHead(in_channels=8, conv_out_channels=8, fc_out_channels=16,
                                  roi_feat_size=7, num_classes=3, norm_cfg=CBN_CFG)
    cls_score, bbox_pred = _train_steps(head, lambda: torch.randn(num_rois, 8, 7, 7))
    assert cls_score.shape == (num_rois, 4) and bbox_pred.shape == (num_rois, 12)
    if num_rois:
        _assert_all_compensated(head, 4)
    else:  # 0 RoIs: no crash, no statistics
        assert all(m.num_sites == 0 and m.num_iters == 0 for m in _cbn_layers(head))


@pytest.mark.parametrize('num_rois', [3, 0])
def test_fcn_mask_head(num_rois):
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead
    head = FCNMaskHead(num_convs=4, in_channels=8, conv_out_channels=8, num_classes=3,
                       roi_feat_size=14, norm_cfg=CBN_CFG)
    (masks, ) = _train_steps(head, lambda: torch.randn(num_rois, 8, 14, 14))
    assert masks.shape == (num_rois, 3, 28, 28)
    if num_rois:
        _assert_all_compensated(head, 4)


def test_burnin_hook_converts_epochs_to_iterations():
    model = nn.Sequential(ConvModule(3, 4, 3, norm_cfg=CBN_CFG), nn.Conv2d(4, 4, 1),
                          CBN(4))
    runner = SimpleNamespace(model=model, train_dataloader=list(range(250)))
    CBNBurnInHook(burnin_epochs=8).before_train(runner)
    assert [m.burnin_iters for m in _cbn_layers(model)] == [2000, 2000]
    CBNBurnInHook(burnin_epochs=0.5, iters_per_epoch=7).before_train(runner)
    assert [m.burnin_iters for m in _cbn_layers(model)] == [4, 4]
    with pytest.raises(ValueError):
        CBNBurnInHook(burnin_epochs=-1)


def test_burnin_hook_is_registered_in_root_hooks():
    from mmengine.registry import HOOKS
    hook = HOOKS.build(dict(type='CBNBurnInHook', burnin_epochs=8))
    assert isinstance(hook, CBNBurnInHook)


def test_retinanet_shared_head_has_one_window_per_level_and_burns_in_by_step():
    """RetinaNet's head runs its convs once per FPN level: 5 call sites per iteration. The
    burn-in (2 steps) must end at step 3, not after 2 calls."""
    from mmdet.models.dense_heads import RetinaHead
    head = RetinaHead(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=2,
                      norm_cfg=dict(type='CBN', buffer_num=2, burnin_iters=2),
                      anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                            scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                            strides=[8, 16, 32, 64, 128]))
    layers = _cbn_layers(head)
    assert len(layers) == 4
    opt = torch.optim.SGD(head.parameters(), lr=0.01)
    sizes = (16, 8, 4, 2, 2)
    for step in range(3):
        cls_scores, bbox_preds = head([torch.randn(1, 8, s, s) for s in sizes])
        loss = sum(c.square().mean() + b.square().mean() for c, b in zip(cls_scores, bbox_preds))
        loss.backward()
        for layer in layers:  # during iteration step + 1
            assert layer.num_iters == step + 1
            assert layer.window_active == (step + 1 > 2)
        opt.step()
        opt.zero_grad()
    for layer in layers:
        assert layer.num_sites == 5
        assert layer.hist_len.tolist() == [1] * 5  # one windowed iteration per level
        assert layer.hist_var_grad.shape[:3] == (5, 8, 2)
