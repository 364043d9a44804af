# Baseline: GroupNorm (32 groups) in backbone, FPN, the 4conv1fc box head and the 4-conv mask
# head, as mmdet's configs/gn (there 2x); the GN ImageNet backbone is Detectron's, which expects
# caffe-style BGR input without std scaling. 8 GPUs x 2 images, lr 0.02, 1x.
_base_ = '../_base_/mask-rcnn_r50_fpn_1x_coco.py'
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    data_preprocessor=dict(
        mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    backbone=dict(
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://detectron/resnet50_gn')),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        mask_head=dict(norm_cfg=norm_cfg),
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg)))
