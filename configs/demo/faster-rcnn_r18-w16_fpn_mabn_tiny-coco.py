# The tiny Faster R-CNN with Moving Average BN (arXiv 2001.06838; official defaults: window 16,
# 100 warm-up iterations, renormalization held at r=1 for 1000 iterations) and weight-centralized
# convs in backbone, FPN and the 4conv1fc head. The paper trains detectors for 180k iterations;
# 1500 are too few for its slow start (see docs/demo.md).
_base_ = './faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'
norm_cfg = dict(type='MABN', requires_grad=True)
conv_cfg = dict(type='CenConv2d')
model = dict(
    backbone=dict(norm_cfg=norm_cfg, conv_cfg=conv_cfg),
    neck=dict(norm_cfg=norm_cfg, conv_cfg=conv_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg, conv_cfg=conv_cfg)))
