# XBNBlock (arXiv 2203.10778) at 1 image per batch: XBNResNet-18-P2 backbone with the paper's
# batch-free norm (GroupNorm, 64 groups capped at the channel count: one channel per group at
# these widths) in the stem and as each block's first norm, live BN elsewhere; GroupNorm in FPN and
# 4conv1fc head as in the paper's xbn-p2-4conv1fc-gn setting, with the GN arm's 8 groups so that
# the two arms differ only in the backbone.
_base_ = './faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py'
gn_cfg = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    backbone=dict(type='XBNResNet'),
    neck=dict(norm_cfg=gn_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=gn_cfg)))
