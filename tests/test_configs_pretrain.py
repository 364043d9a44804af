"""Every ImageNet config of configs/pretrain loads, builds in mmpretrain's scope, trains one step
with its own optimizer settings and predicts; and its backbone loads into the detection configs
of the same norm with every key matched (the pretrain -> detect path, on ResNet-50 itself).

Configs added later are covered automatically; a new norm needs its detection config below.
"""
import copy
import glob
import os.path as osp
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_state_dict

import mmnorm_plugin  # noqa: F401
from mmnorm_plugin.validation.norm_cfg import validate_norm_cfgs

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(osp.relpath(p, ROOT)
                 for p in glob.glob(osp.join(ROOT, 'configs', 'pretrain', '*.py')))
# norm in the file name -> the layers its backbone must contain
LAYERS = {'bn': {'BatchNorm2d'}, 'bgn': {'BGN'}, 'bkn': {'BKN'}, 'cbn': {'CBN'},
          'mabn': {'MABN', 'CenConv2d'}, 'xbn-p2': {'GroupNorm', 'BatchNorm2d'}}
# norm in the file name -> a detection config whose backbone the classifier's must fill
DETECTORS = {
    'bn': 'configs/baselines/faster-rcnn_r50_fpn_bn_8xb2-1x_coco.py',
    'bgn': 'configs/bgn/faster-rcnn_r50-in1k-bgn_fpn_bgn-all_8xb2-1x_coco.py',
    'bkn': 'configs/bkn/faster-rcnn_r50_fpn_bkn-all_8xb2-1x_coco.py',
    'cbn': 'configs/cbn/faster-rcnn_r50_fpn_cbn-all_8xb2-1x_coco.py',
    'mabn': 'configs/mabn/faster-rcnn_r50_fpn_mabn-all-ft_8xb2-2x_coco.py',
    'xbn-p2': 'configs/xbn/faster-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py',
}


def test_configs_found():
    assert len(CONFIGS) >= 11, CONFIGS
    assert {osp.basename(c).split('_')[1] for c in CONFIGS} <= set(DETECTORS) == set(LAYERS)


@pytest.mark.slow  # 11 ResNet-50s built, stepped twice and loaded (50-100 s on 2 busy cores)
@pytest.mark.parametrize('config', CONFIGS)
def test_config_trains_a_step_and_its_backbone_loads_into_the_detector(config, mmpretrain):
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    cfg = Config.fromfile(osp.join(ROOT, config))
    assert cfg.default_scope == 'mmpretrain'
    assert 'mmnorm_plugin' in cfg.custom_imports['imports']
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)  # e.g. MABN without CenConv2d
        validate_norm_cfgs(cfg.model, scope='mmpretrain')
    init_default_scope('mmpretrain')
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    norm = osp.basename(config).split('_')[1]
    assert LAYERS[norm] <= {type(m).__name__ for m in model.backbone.modules()}
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert wrapper._accumulative_counts * cfg.train_dataloader.batch_size * 8 in (256, 16)

    images = torch.rand(2, 3, 32, 32) * 255
    samples = [DataSample().set_gt_label(3), DataSample().set_gt_label(999)]
    model.train()
    for _ in range(2):  # a second step: windows and moving averages hold past entries
        data = model.data_preprocessor(dict(inputs=list(images), data_samples=samples), True)
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        assert torch.isfinite(loss), losses
        wrapper.backward(loss)
        wrapper.step()
        grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
        wrapper.zero_grad()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(images), data_samples=samples), False)
        results = model(**data, mode='predict')
    assert len(results) == 2 and all(torch.isfinite(r.pred_score).all() for r in results)

    # what init_cfg=dict(type='Pretrained', prefix='backbone.') hands the detector's backbone
    from mmdet.registry import MODELS as DET_MODELS
    det_cfg = Config.fromfile(osp.join(ROOT, DETECTORS[norm]))
    init_default_scope('mmdet')
    backbone_cfg = copy.deepcopy(det_cfg.model.backbone)
    backbone_cfg.init_cfg = None
    backbone = DET_MODELS.build(backbone_cfg)
    state = {k[len('backbone.'):]: v for k, v in model.state_dict().items()
             if k.startswith('backbone.')}
    load_state_dict(backbone, state, strict=True)  # raises on a missing or unexpected key
    loaded = backbone.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
