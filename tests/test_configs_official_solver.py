"""The configs that follow the official maskrcnn-benchmark solver build the optimizer it uses.

maskrcnn-benchmark (MABN and XBNBlock detection code) gives every parameter whose name contains
``bias`` twice the base LR and no weight decay, and everything else the base LR and weight decay
(norm gammas included); frozen parameters are not optimized. The configs express this with
``paramwise_cfg.custom_keys``; this test checks the optimizer mmengine builds from them.
"""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import mmnorm_plugin  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.mark.parametrize('config', [
    'configs/xbn/faster-rcnn_r50_fpn_xbn-p2-4conv1fc-gn_8xb2-1x_coco.py',
    'configs/mabn/mask-rcnn_r50-caffe_fpn_mabn-all-scratch_8xb1-2x_coco.py',
])
def test_bias_lr_x2_and_no_bias_decay(config):
    from mmdet.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, config))
    init_default_scope('mmdet')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr = cfg.optim_wrapper.optimizer.lr
    base_wd = cfg.optim_wrapper.optimizer.weight_decay
    group_of = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    seen = {'bias': 0, 'other': 0}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert id(param) not in group_of, name
            continue
        group = group_of[id(param)]
        if name.endswith('.bias'):
            assert (group['lr'], group['weight_decay']) == (2 * base_lr, 0.0), name
            seen['bias'] += 1
        else:
            assert (group['lr'], group['weight_decay']) == (base_lr, base_wd), name
            seen['other'] += 1
    assert seen['bias'] > 10 and seen['other'] > 10
