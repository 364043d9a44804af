# The norm_sweep study's scratch setting on the hard tiny set (a photometric stress test: every
# stored image has its own synthetic gain, offset and colour cast, which rewards per-image
# normalization; see mmnorm_plugin/datasets/tiny_coco.py). Same model as configs/small_batch, on the
# sweep's budget: 5 epochs of the 240 images (1,200 steps at 1 image per batch, as on the photo
# digits), LR x0.1 for the last epoch.
_base_ = [
    '../_base_/models/faster-rcnn_r18-w16_fpn_tiny.py',
    '../_base_/datasets/tiny_coco_hard_detection.py',
    '../_base_/norm_sweep_runtime.py',
    '../_base_/plugin.py',
]
train_dataloader = dict(batch_size=8)
max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[4], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
model = dict(
    rpn_head=dict(anchor_generator=dict(scales=[4])),
    train_cfg=dict(rcnn=dict(sampler=dict(num=32))))
