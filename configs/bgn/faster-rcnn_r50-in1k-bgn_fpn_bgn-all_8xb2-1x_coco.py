# Faster R-CNN R50-FPN with BGN in backbone, FPN and 4conv1fc box head (the bgn-all config it
# inherits), its backbone started from a ResNet-50 trained with BGN on ImageNet by
# configs/pretrain/resnet50_bgn_8xb2-acc16_in1k.py instead of torchvision's BN model (nobody
# publishes a BGN ImageNet model). The checkpoint is that config's last one in its default work
# dir; `prefix='backbone.'` takes the classifier's backbone (every key of this backbone, same
# group count 32) and leaves its neck and head out. Train the classifier first
# (docs/beyond_detection.md), or point `model.backbone.init_cfg.checkpoint` at your own.
_base_ = './faster-rcnn_r50_fpn_bgn-all_8xb2-1x_coco.py'
model = dict(
    backbone=dict(
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/resnet50_bgn_8xb2-acc16_in1k/epoch_100.pth',
            prefix='backbone.')))
