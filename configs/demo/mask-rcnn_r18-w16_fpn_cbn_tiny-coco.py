# The tiny Mask R-CNN with Cross-Iteration BN (buffer 3; plain BN until the first LR step at
# iteration 1125, as in the paper's detection setup) in backbone, FPN, the 4conv1fc box head and
# the mask head; bbox + segm mAP on the tiny dataset.
_base_ = './mask-rcnn_r18-w16_fpn_bn_tiny-coco.py'
norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3, burnin_iters=1125)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg), mask_head=dict(norm_cfg=norm_cfg)))
