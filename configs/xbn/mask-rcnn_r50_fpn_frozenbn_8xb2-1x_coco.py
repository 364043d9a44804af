# BN-backbone baseline for mask-rcnn_r50_fpn_xbn-p2 (extension beyond the paper): frozen-BN
# ResNet-50 (statistics and affine), plain FPN + 2fc head + mask head. 8 GPUs x 2 images, lr 0.02.
_base_ = '../_base_/mask-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True, frozen_stages=1))
