# The one-command demo (`make demo`): the tiny Faster R-CNN trained from scratch at 2 images per
# batch with Cross-Iteration BN (arXiv 2002.05712) in backbone, FPN and the 4conv1fc box head.
# Window: the current batch + 3 compensated past batches; plain BN for the first 100 iterations
# (the weights change fastest early, where the Taylor compensation is least accurate).
# Compare with faster-rcnn_r18-w16_fpn_bn_tiny-coco.py (same model with BN).
_base_ = './faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'
norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3, burnin_iters=100)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
