# XBNBlock-P2 ResNet-50 in Mask R-CNN R50-FPN, 1x COCO, plain FPN + 2fc box head + default mask
# head. An EXTENSION beyond the paper: the paper and the official code report Faster R-CNN only.
# Backbone exactly as faster-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py. 8 GPUs x 2 images, lr 0.02.
_base_ = '../_base_/mask-rcnn_r50_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        type='XBNResNet',
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        frozen_stages=1,
        bfn_cfg=dict(type='GN', num_groups=64, requires_grad=True),
        bfn_position='P2',
        stem_bfn=True,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/xbn/resnet50_xbn-p2_in1k-standard.pth')))
