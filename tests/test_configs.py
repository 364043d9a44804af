"""Every detection config under configs/ loads, builds, trains one step and predicts one batch
on CPU (the ImageNet configs of configs/pretrain: tests/test_configs_pretrain.py).

Configs added later are covered automatically. Pretrained weights are switched off (no
network); images are 96x128 random tensors with random boxes (and masks for Mask R-CNN).
"""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.validation.norm_cfg import validate_norm_cfgs

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# configs of other codebases, built and trained by their own tests
OTHER_CODEBASES = {'pretrain'}  # mmpretrain: tests/test_configs_pretrain.py
CONFIGS = sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p.split(osp.sep)
    and osp.relpath(p, ROOT).split(osp.sep)[1] not in OTHER_CODEBASES)


def _drop_pretrained(cfg):
    """Remove every Pretrained init_cfg (they would download weights)."""
    if isinstance(cfg, dict):
        for key, value in list(cfg.items()):
            if key == 'init_cfg' and (
                    (isinstance(value, dict) and value.get('type') == 'Pretrained') or
                    (isinstance(value, list) and any(
                        isinstance(v, dict) and v.get('type') == 'Pretrained' for v in value))):
                cfg[key] = None
            elif key == 'pretrained':
                cfg[key] = None
            else:
                _drop_pretrained(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _drop_pretrained(value)


def _num_classes(model_cfg) -> int:
    if 'bbox_head' in model_cfg:  # single-stage (configs/examples: RetinaNet)
        return model_cfg.bbox_head.num_classes
    bbox_head = model_cfg.roi_head.bbox_head
    if isinstance(bbox_head, list):
        bbox_head = bbox_head[0]
    return bbox_head.num_classes


def test_configs_found():
    assert len(CONFIGS) >= 8, CONFIGS


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_trains_and_predicts(config):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs

    cfg = Config.fromfile(osp.join(ROOT, config))
    assert 'mmnorm_plugin' in cfg.get('custom_imports', {}).get('imports', []), \
        f'{config} does not import the plugin through custom_imports'
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    validate_norm_cfgs(cfg.model)
    model_cfg = copy.deepcopy(cfg.model)
    _drop_pretrained(model_cfg)
    # fewer proposals/RoIs than on COCO keeps ~60 R50 configs within CI time; every norm still
    # sees a multi-RoI batch
    if 'rpn_proposal' in model_cfg.train_cfg:
        model_cfg.train_cfg.rpn_proposal.max_per_img = 100
        model_cfg.train_cfg.rcnn.sampler.num = 64
        model_cfg.test_cfg.rpn.max_per_img = 50
    model = MODELS.build(model_cfg)
    model.init_weights()
    with_mask = 'mask_head' in model_cfg.get('roi_head', {})
    packed = demo_mm_inputs(
        batch_size=2, image_shapes=[(3, 96, 128), (3, 128, 96)], num_items=[3, 2],
        num_classes=_num_classes(model_cfg), with_mask=with_mask)

    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss), losses
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
    assert len(results) == 2
    for result in results:
        assert torch.isfinite(result.pred_instances.bboxes).all()
