# XBNBlock-P2 ResNeXt-50 32x4d (BFN after the grouped 3x3 conv) Faster R-CNN, plain FPN + 2fc
# head, 8 GPUs x 2 images, lr 0.02, 1x. Pretrained: the official ImageNet ResNeXt-50-XBNBlock
# ("advanced" training, the only public ResNeXt one) converted with
# tools/model_converters/xbn_official_to_mmdet.py.
_base_ = './faster-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py'
model = dict(
    backbone=dict(
        type='XBNResNeXt',
        depth=50,
        groups=32,
        base_width=4,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/xbn/resnext50-32x4d_xbn-p2_in1k-advanced.pth')))
