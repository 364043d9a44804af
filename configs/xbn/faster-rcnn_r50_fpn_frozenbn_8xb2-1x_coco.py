# BN-backbone baseline for the XBNBlock configs: plain ResNet-50, every backbone BN frozen
# (statistics and affine, as the official FrozenBatchNorm2d; configs/baselines/ keeps mmdet's
# trainable BN affine), stem + stage 1 frozen, plain FPN + 2fc head. 8 GPUs x 2 images, lr 0.02,
# 1x. The paper's baseline backbone is the authors' own BN ResNet-50 (same ImageNet recipe as
# their XBNBlock model, not public); torchvision's ResNet-50 stands in for it here.
_base_ = '../_base_/faster-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, frozen_stages=1))
