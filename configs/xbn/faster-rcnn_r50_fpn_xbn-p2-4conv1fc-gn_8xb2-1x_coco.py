# XBNBlock-P2 ResNet-50 Faster R-CNN with GroupNorm (32 groups) in the FPN and a 4conv1fc box head
# (conv_out_channels=256): the paper's second detection setting (official config
# e2e_faster_rcnn_R_50_0selfStep3nGN_1FPNGn_2XconvGn_1x). 8 GPUs x 2 images, lr 0.02, 1x.
# Box head: Shared4Conv1FCLastReLUBBoxHead, the official 4conv1fc extractor (one ReLU after the
# fourth conv, not after each).
_base_ = './faster-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py'
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCLastReLUBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg)))
