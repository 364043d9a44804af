"""The fine-tune setting end to end at test size: `make pretrain`'s function writes a backbone
checkpoint that torch loads with its weights-only default and that the fine-tune configs' detector
loads into a frozen backbone; norm_sweep's neck+heads arms leave that backbone alone."""
import os.path as osp

import torch

from mmnorm_plugin.analysis.norm_sweep import Arm, arm_config, parse_norm
from mmnorm_plugin.analysis.pretrain import pretrain_backbone

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FINETUNE = osp.join(ROOT, 'configs', 'norm_sweep',
                    'faster-rcnn_r18-w16_fpn_bn_finetune_photo-digits.py')


def test_pretrained_backbone_loads_into_the_frozen_finetune_detector(tmp_path):
    path = str(tmp_path / 'r18.pth')
    result = pretrain_backbone(path, num_train=128, num_val=64, epochs=1, batch_size=64)
    assert 0.0 <= result['val_accuracy'] <= 1.0 and osp.isfile(path)
    saved = torch.load(path)  # torch's weights-only default: nothing to allow-list
    assert saved['meta']['num_train'] == 128 and 'conv1.weight' in saved['state_dict']

    name, spec = parse_norm('CBN')
    cfg, options = arm_config(FINETUNE, Arm(name, spec, 1), seed=0, parts=['neck', 'heads'])
    assert not any(k.startswith('model.backbone') for k in options)
    assert cfg.model.backbone.norm_eval and cfg.model.backbone.frozen_stages == 1
    assert cfg.model.neck.norm_cfg.type == 'CBN'
    cfg.model.backbone.init_cfg.checkpoint = path

    import mmnorm_plugin  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    own = model.backbone.state_dict()
    for key, value in saved['state_dict'].items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    model.train()
    bn = model.backbone.layer2[0].bn1
    assert not bn.training and not bn.weight.requires_grad  # frozen statistics and affine
    assert not model.backbone.conv1.weight.requires_grad  # frozen stem (frozen_stages=1)
