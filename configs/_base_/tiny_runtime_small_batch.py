# Runtime of the small-batch detection study (configs/small_batch): epoch based, so every arm
# sees the same images whatever its batch size; the LR is written for 8 images per batch and
# auto_scale_lr scales it linearly to the arm's batch (0.01 per image, the demo's rate); warm-up
# is one epoch in iterations (30 at 8 images/batch, 240 at 1). One evaluation and one checkpoint
# at the end; LR steps (x0.1) after epochs 8 and 11 of 12 (mmdet's 1x shape). 12 epochs of the
# 96 px images keep one arm near 8 min on one CPU thread (with the study's 32 sampled RoIs per
# image, see configs/small_batch). A fixed seed gives every arm the same data order and init.
_base_ = 'mmdet::_base_/default_runtime.py'

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[8, 11], gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.08, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=True, base_batch_size=8)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=max_epochs))
randomness = dict(seed=0)
