# Batch Kalman Normalization (arXiv 1802.03133) in the backbone (live statistics, norm_eval=False),
# FPN, the 4conv1fc box head and the 4-conv mask head. Our extension: the official code is
# CIFAR-only. BKN keeps BN's parameter/buffer names, so the torchvision ImageNet BN checkpoint
# initialises it; the frozen stem + stage 1 (frozen_stages=1) run on running statistics, the chain
# starts in stage 2. prior_weight 0.9 is the official micro-batch gain. 8 GPUs x 2 images,
# lr 0.02, 1x. Do not set sync_bn='torch': it would turn every BKN into nn.SyncBatchNorm.
_base_ = '../_base_/mask-rcnn_r50_fpn_1x_coco.py'
norm_cfg = dict(type='BKN', requires_grad=True, prior_weight=0.9)
model = dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
