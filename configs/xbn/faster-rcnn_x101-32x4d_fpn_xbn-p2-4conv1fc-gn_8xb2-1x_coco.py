# XBNBlock-P2 ResNeXt-101 32x4d Faster R-CNN with GN (32 groups) in the FPN and the 4conv1fc box
# head. 8 GPUs x 2 images, lr 0.02, 1x.
# Box head: Shared4Conv1FCLastReLUBBoxHead, the official 4conv1fc extractor (one ReLU after the
# fourth conv, not after each).
_base_ = './faster-rcnn_x101-32x4d_fpn_xbn-p2_8xb2-1x_coco.py'
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCLastReLUBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg)))
