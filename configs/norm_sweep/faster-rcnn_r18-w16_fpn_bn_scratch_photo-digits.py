# The norm_sweep study's *scratch* setting on the neutral set (MABN paper's detection setting: the
# norm everywhere, trained from scratch): the tiny Faster R-CNN (ResNet-18, 16 base channels) with
# live BN in backbone, FPN and 4conv1fc box head, at 8 images per batch. tools/analysis/norm_sweep.py
# swaps the norm (backbone/neck/heads) and the images per batch (LR scaled linearly) of this
# config; nothing else differs between arms.
_base_ = [
    '../_base_/models/faster-rcnn_r18-w16_fpn_tiny.py',
    '../_base_/datasets/photo_digits_detection.py',
    '../_base_/norm_sweep_runtime.py',
    '../_base_/plugin.py',
]
train_dataloader = dict(batch_size=8)
model = dict(
    # 16 px anchors at stride 4 (mmdet's default 32 px): the 14-28 px digits reach IoU 0.3
    rpn_head=dict(anchor_generator=dict(scales=[4])),
    roi_head=dict(bbox_head=dict(num_classes=4)),
    # at most 4 objects: 32 sampled RoIs (25 % positives) instead of 128; the 4conv1fc head
    # costs half of a step at 128
    train_cfg=dict(rcnn=dict(sampler=dict(num=32))))
