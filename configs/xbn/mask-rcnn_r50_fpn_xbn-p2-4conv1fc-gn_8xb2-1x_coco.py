# XBNBlock-P2 ResNet-50 Mask R-CNN with GN (32 groups) in the FPN, the 4conv1fc box head and the
# 4-conv mask head. An EXTENSION beyond the paper (Faster R-CNN only there). 8 GPUs x 2 images.
# Box head: Shared4Conv1FCLastReLUBBoxHead, the official 4conv1fc extractor (one ReLU after the
# fourth conv, not after each).
_base_ = './mask-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py'
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCLastReLUBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
