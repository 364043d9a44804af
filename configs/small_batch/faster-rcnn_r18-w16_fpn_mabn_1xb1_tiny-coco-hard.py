# Moving Average BN (arXiv 2001.06838, official defaults) with weight-centralized convs
# (CenConv2d) at 1 image per batch in backbone, FPN and 4conv1fc head.
_base_ = './faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py'
norm_cfg = dict(type='MABN', requires_grad=True)
conv_cfg = dict(type='CenConv2d')
model = dict(
    backbone=dict(norm_cfg=norm_cfg, conv_cfg=conv_cfg),
    neck=dict(norm_cfg=norm_cfg, conv_cfg=conv_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg, conv_cfg=conv_cfg)))
