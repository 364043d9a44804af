# The tiny Faster R-CNN with Batch Group Norm (arXiv 2012.02782) in backbone, FPN and the
# 4conv1fc head. 8 groups: the demo's narrow widths (16..128 channels) all divide by 8.
_base_ = './faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'
norm_cfg = dict(type='BGN', requires_grad=True, num_groups=8)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
