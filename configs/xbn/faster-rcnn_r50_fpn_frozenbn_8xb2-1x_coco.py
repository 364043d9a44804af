# BN-backbone baseline for the XBNBlock configs: plain ResNet-50, every backbone BN frozen
# (statistics and affine, as the official FrozenBatchNorm2d; configs/baselines/ keeps mmdet's
# trainable BN affine), stem + stage 1 frozen, plain FPN + 2fc head. 8 GPUs x 2 images, lr 0.02,
# 1x. The paper's baseline backbone is the authors' own BN ResNet-50 (same ImageNet recipe as
# their XBNBlock model, not public); torchvision's ResNet-50 stands in for it here.
_base_ = '../_base_/faster-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, frozen_stages=1))
# Solver of the official maskrcnn-benchmark fork: biases (every parameter named `bias`, norm
# betas included) at 2x the LR and without weight decay (BIAS_LR_FACTOR=2,
# WEIGHT_DECAY_BIAS=0), linear warm-up over 500 iterations from 1/3 of the LR (WARMUP_FACTOR).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.bias': dict(lr_mult=2.0, decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
