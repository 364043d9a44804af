# BN-backbone baseline for mask-rcnn_r50_fpn_xbn-p2-4conv1fc-gn (extension beyond the paper):
# frozen-BN ResNet-50, GN (32 groups) in FPN, 4conv1fc box head and mask head. 8 GPUs x 2 images.
# Box head: Shared4Conv1FCLastReLUBBoxHead, the official 4conv1fc extractor (one ReLU after the
# fourth conv, not after each).
_base_ = './mask-rcnn_r50_fpn_frozenbn_8xb2-1x_coco.py'
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCLastReLUBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
