# Cross-Iteration BN (arXiv 2002.05712), window 4, at 1 image per batch in backbone, FPN and
# 4conv1fc head. Burn-in as in the paper's detection setup (plain BN until the first LR step):
# 8 of 12 epochs = 1920 iterations at 240 images per epoch and 1 image per batch.
_base_ = './faster-rcnn_r18-w16_fpn_bn_1xb1_tiny-coco-hard.py'
norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3, burnin_iters=1920)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
