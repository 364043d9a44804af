# Baseline: mmdet's default. ImageNet BN backbone with frozen statistics (norm_eval=True) and
# frozen stem + stage 1; no norm in FPN and heads. 8 GPUs x 2 images, lr 0.02.
_base_ = '../_base_/faster-rcnn_r50_fpn_1x_coco.py'
