# Demo baseline: the tiny Faster R-CNN (ResNet-18, 16 base channels, from scratch) on the embedded
# tiny dataset at 2 images per batch, live BatchNorm in backbone, FPN and the 4conv1fc box head.
_base_ = [
    '../_base_/models/faster-rcnn_r18-w16_fpn_tiny.py',
    '../_base_/datasets/tiny_coco_detection.py',
    '../_base_/tiny_runtime.py',
    '../_base_/plugin.py',
]
