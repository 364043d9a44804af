# The paper's BN-backbone 4conv1fc baseline: frozen-BN ResNet-50, plain FPN and the official
# 4conv1fc box head WITHOUT normalization (convs with bias, one ReLU after the fourth conv:
# Shared4Conv1FCLastReLUBBoxHead), as the official BN config (USE_GN 'No' in FPN and head).
# Solver as the XBN configs (base). 8 GPUs x 2 images, lr 0.02, 1x.
_base_ = './faster-rcnn_r50_fpn_frozenbn_8xb2-1x_coco.py'
model = dict(
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCLastReLUBBoxHead', conv_out_channels=256)))
