# XBNBlock-P2 ResNet-50 (Huang et al., CVPR 2022, arXiv 2203.10778) in Faster R-CNN R50-FPN, 1x COCO,
# plain FPN + 2fc box head: the paper's detection setting (official maskrcnn-benchmark configs,
# 8 GPUs x 2 images, lr 0.02, 1x). During fine-tuning the backbone BNs are frozen (statistics via
# norm_eval, affine via requires_grad=False: the official FrozenBatchNorm2d) while the batch-free
# GroupNorms (one per bottleneck after the 3x3 conv, plus the stem) keep normalizing each image.
# Stem + stage 1 frozen (official FREEZE_CONV_BODY_AT=2). Pretrained weights: the official
# ImageNet ResNet-50-XBNBlock ("standard" training) converted with
# tools/model_converters/xbn_official_to_mmdet.py (see configs/xbn/README.md).
_base_ = '../_base_/faster-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        type='XBNResNet',
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        frozen_stages=1,
        # 64 groups (capped at the channel count) as the ImageNet model was trained; the
        # official detection runs used 32 (README).
        bfn_cfg=dict(type='GN', num_groups=64, requires_grad=True),
        bfn_position='P2',
        stem_bfn=True,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/xbn/resnet50_xbn-p2_in1k-standard.pth')))
