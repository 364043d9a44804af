# CBN on the easy tiny set: the tiny Faster R-CNN trained from scratch at 2 images per batch with
# Cross-Iteration BN (arXiv 2002.05712) in backbone, FPN and the 4conv1fc box head. Run it with
# `CONFIG=configs/demo/faster-rcnn_r18-w16_fpn_cbn_tiny-coco.py make demo` (`make demo` alone
# runs configs/small_batch/faster-rcnn_r18-w16_fpn_cbn_1xb1_tiny-coco-hard.py: CBN at 1 image per
# batch on the hard set, where BN is starved). Window: the current batch + 3 compensated past
# batches. Burn-in as in the paper's detection setup (plain BN for 8 of 12 epochs, CBN from the
# first LR drop on): here plain BN until the first LR step at iteration 1125 of 1500. The layer's
# defaults otherwise: exact gradient, window running statistics. Burn-in exists because the
# weights move fast early, where a first-order compensation of old statistics is least accurate.
# BN twin: faster-rcnn_r18-w16_fpn_bn_tiny-coco.py.
_base_ = './faster-rcnn_r18-w16_fpn_bn_tiny-coco.py'
norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3, burnin_iters=1125)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
