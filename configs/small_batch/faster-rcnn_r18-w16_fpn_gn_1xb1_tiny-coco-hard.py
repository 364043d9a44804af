# GroupNorm (8 groups: the narrow widths 16..128 all divide by 8) in backbone, FPN and 4conv1fc
# head at 1 image per batch: batch-independent by construction, the reference small-batch norm.
_base_ = './faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py'
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
