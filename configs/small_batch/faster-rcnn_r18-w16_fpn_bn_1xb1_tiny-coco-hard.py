# BN at 1 image per batch (the regime the plugin is for): the same epochs, LR scaled to 1/8 by
# auto_scale_lr.
_base_ = './faster-rcnn_r18-w16_fpn_bn_1xb8_tiny-coco-hard.py'
train_dataloader = dict(batch_size=1)
