# XBNBlock-P2 ResNet-50 (Huang et al., CVPR 2022, arXiv 2203.10778) in Faster R-CNN R50-FPN, 1x
# COCO, plain FPN + 2fc box head: the paper's detection setting (official maskrcnn-benchmark
# configs, 8 GPUs x 2 images, lr 0.02, 1x). During fine-tuning the backbone BNs are frozen
# (statistics via norm_eval, affine via requires_grad=False: the official FrozenBatchNorm2d) while
# the batch-free GroupNorms (one per bottleneck after the 3x3 conv, plus the stem) keep normalizing
# each image. Stem + stage 1 frozen (official FREEZE_CONV_BODY_AT=2). Pretrained weights: the
# official ImageNet ResNet-50-XBNBlock ("standard" training) converted with
# tools/model_converters/xbn_official_to_mmdet.py (see configs/xbn/README.md).
_base_ = '../_base_/faster-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        type='XBNResNet',
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        # the official FREEZE_CONV_BODY_AT=2 freezes its stages 0 (stem) and 1 (res2), i.e. mmdet's
        # stem and layer1: frozen_stages=1
        frozen_stages=1,
        # 32 groups as in the official detection runs (maskrcnn-benchmark's
        # GROUP_NORM.NUM_GROUPS default); the ImageNet model was trained with 64 (README).
        bfn_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        bfn_position='P2',
        stem_bfn=True,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/xbn/resnet50_xbn-p2_in1k-standard.pth')))
# Solver of the official maskrcnn-benchmark fork: biases (every parameter named `bias`, norm
# betas included) at 2x the LR and without weight decay (BIAS_LR_FACTOR=2,
# WEIGHT_DECAY_BIAS=0), linear warm-up over 500 iterations from 1/3 of the LR (WARMUP_FACTOR).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.bias': dict(lr_mult=2.0, decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
