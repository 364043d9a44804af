# The official MABN from-scratch run as maskrcnn-benchmark builds it: Mask R-CNN R50-FPN with
# MABN + CenConv2d everywhere (as the base), plus the detection code's ResNet and input
# conventions, which the MABN configs leave at maskrcnn-benchmark's defaults: the stride of each
# stage in the first 1x1 conv (STRIDE_IN_1X1=True, mmdet's style='caffe') and BGR input in
# 0-255 with the mean subtracted and no std scaling (TO_BGR255, PIXEL_MEAN, PIXEL_STD=1).
# 8 GPUs x 2 images, lr 0.02, 2x.
_base_ = './mask-rcnn_r50_fpn_mabn-all-scratch_8xb2-2x_coco.py'
model = dict(
    data_preprocessor=dict(
        mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    backbone=dict(style='caffe'))
