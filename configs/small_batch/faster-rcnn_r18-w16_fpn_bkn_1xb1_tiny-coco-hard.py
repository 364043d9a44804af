# Batch Kalman Norm (arXiv 1802.03133, official gain p=0.9) at 1 image per batch in backbone, FPN
# and 4conv1fc head.
_base_ = './faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py'
norm_cfg = dict(type='BKN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
