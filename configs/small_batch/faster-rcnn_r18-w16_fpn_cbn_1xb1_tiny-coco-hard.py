# Cross-Iteration BN (arXiv 2002.05712), window 4, at 1 image per batch in backbone, FPN and
# 4conv1fc head, from the first iteration (the layer's defaults: exact gradient, window running
# statistics). The paper's detection setup keeps plain BN until the first LR step (here epoch 8,
# `burnin_iters=1920`). `make demo` trains this config; what it prints is recorded in
# docs/evidence/demo.json.
_base_ = './faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py'
norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
