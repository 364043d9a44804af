# XBNBlock-P2 ResNeXt-101 32x8d (the paper's ResNeXt-101) Faster R-CNN, plain FPN + 2fc head,
# 8 GPUs x 2 images, lr 0.02, 1x; backbone and solver settings as the R-50 config (base). No
# official ImageNet ResNeXt-101-XBNBlock checkpoint is published: pre-train one with the official
# ImageNet code, then convert it (configs/xbn/README.md). Training from this config without that
# file fails at init (it is not downloaded).
_base_ = './faster-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py'
model = dict(
    backbone=dict(
        type='XBNResNeXt',
        depth=101,
        groups=32,
        base_width=8,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/xbn/resnext101-32x8d_xbn-p2_in1k.pth')))
