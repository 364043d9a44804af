# docs/your_own_config.md: an mmdet model (RetinaNet, ResNet-18 FPN) trained on this repo's tiny
# set with a plugin norm. Copy it and change the model base, the norm or the data bases.
_base_ = [
    # Only the *model* of mmdet's RetinaNet. mmdet's complete configs (e.g.
    # 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py') also include mmdet's COCO dataset,
    # schedule and runtime, which set the same keys as the two bases below: mmengine refuses
    # that with "Duplicate key is not allowed among bases".
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/tiny_coco_detection.py',  # data/tiny_coco: 3 classes, 160 px, COCO mAP
    '../_base_/tiny_runtime.py',  # 1500 iterations, SGD, warm-up, two LR steps, mmdet's hooks
    '../_base_/plugin.py',  # custom_imports: registers the plugin's norms when the config loads
]

norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3)  # current + 3 past iterations
# other norms: uncomment one line (each takes its own arguments; buffer_num is CBN's)
# norm_cfg = dict(type='BGN', requires_grad=True, num_groups=32)
# norm_cfg = dict(type='BKN', requires_grad=True)
model = dict(
    backbone=dict(
        depth=18,  # what mmdet's retinanet_r18_fpn_1x_coco.py changes in this model base
        norm_cfg=norm_cfg,
        norm_eval=False,  # else mmdet freezes every _BatchNorm's statistics, the plugin's too
        frozen_stages=-1,  # nothing pretrained to keep: train every stage
        # the base loads 'torchvision://resnet50' (a download, and the wrong depth): from
        # scratch, offline. For ImageNet weights: dict(type='Pretrained',
        # checkpoint='torchvision://resnet18'); the plugin's norms load BN checkpoints.
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], norm_cfg=norm_cfg),  # ResNet-18's widths
    bbox_head=dict(num_classes=3, norm_cfg=norm_cfg))  # the tiny set's classes (base: COCO's 80)
