# Demo baseline with masks: tiny Mask R-CNN, live BatchNorm everywhere, bbox + segm mAP.
_base_ = [
    '../_base_/models/mask-rcnn_r18-w16_fpn_tiny.py',
    '../_base_/datasets/tiny_coco_instance.py',
    '../_base_/tiny_runtime.py',
    '../_base_/plugin.py',
]
