# Batch Group Norm (arXiv 2012.02782), 8 groups, at 1 image per batch in backbone, FPN and
# 4conv1fc head.
_base_ = './faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py'
norm_cfg = dict(type='BGN', requires_grad=True, num_groups=8)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
