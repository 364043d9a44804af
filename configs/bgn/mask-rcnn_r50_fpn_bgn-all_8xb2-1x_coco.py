# Mask R-CNN R50-FPN with BGN (arXiv 2012.02782) in the backbone, the FPN, a 4conv1fc box head
# and the mask head; 8 GPUs x 2 images, 1x. Our extension: the paper has no detection setup
# (README.md).
_base_ = '../_base_/mask-rcnn_r50_fpn_1x_coco.py'

# 32 groups divide every width of ResNet-50, FPN and the heads; see BGN's docstring for why.
norm_cfg = dict(type='BGN', num_groups=32, requires_grad=True)
model = dict(
    # The torchvision ImageNet BN checkpoint of the base config loads as is: BGN pools each
    # layer's per-channel running statistics into per-group ones when the weights are read.
    # norm_eval=False: with the default True the layers would run on those frozen statistics
    # and BGN's batch-group statistics would never be used (frozen_stages=1 keeps the stem and
    # stage 1 in eval mode, as for BN).
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
