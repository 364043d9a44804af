# Baseline: BN with live batch statistics in the backbone at 2 images per GPU (norm_eval=False):
# the small-batch regime the plugin's methods address. 8 GPUs x 2 images, lr 0.02.
_base_ = '../_base_/faster-rcnn_r50_fpn_1x_coco.py'
model = dict(backbone=dict(norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False))
