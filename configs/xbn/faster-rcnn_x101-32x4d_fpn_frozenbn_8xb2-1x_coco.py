# BN-backbone baseline for faster-rcnn_x101-32x4d_fpn_xbn-p2: mmdet's ResNeXt-101 32x4d (OpenMMLab
# ImageNet weights), frozen BN, plain FPN + 2fc head. 8 GPUs x 2 images, lr 0.02, 1x.
_base_ = './faster-rcnn_r50_fpn_frozenbn_8xb2-1x_coco.py'
model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=32,
        base_width=4,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_32x4d')))
