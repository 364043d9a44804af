# BN-backbone baseline for faster-rcnn_x101-32x8d_fpn_xbn-p2: ResNeXt-101 32x8d with torchvision's
# ImageNet weights (same key names as mmdet's ResNeXt; pytorch-style input like the R-50
# baseline), frozen BN, plain FPN + 2fc head; solver as the R-50 baseline (base).
# 8 GPUs x 2 images, lr 0.02, 1x.
_base_ = './faster-rcnn_r50_fpn_frozenbn_8xb2-1x_coco.py'
model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=32,
        base_width=8,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnext101_32x8d')))
