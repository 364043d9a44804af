# XBNBlock-P2 ResNet-50 in Mask R-CNN R50-FPN, 1x COCO, plain FPN + 2fc box head + default mask
# head. An EXTENSION beyond the paper: the paper and the official code report Faster R-CNN only.
# Backbone exactly as faster-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py. 8 GPUs x 2 images, lr 0.02.
_base_ = '../_base_/mask-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        type='XBNResNet',
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        frozen_stages=1,
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
