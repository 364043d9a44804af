# The paper's BN-backbone 4conv1fc baseline with ResNeXt-101 32x8d: frozen BN, plain FPN and the
# official 4conv1fc box head without normalization (one ReLU after the fourth conv).
# 8 GPUs x 2 images, lr 0.02, 1x.
_base_ = './faster-rcnn_x101-32x8d_fpn_frozenbn_8xb2-1x_coco.py'
model = dict(
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCLastReLUBBoxHead', conv_out_channels=256)))
