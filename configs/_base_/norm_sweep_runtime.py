# Runtime of the norm_sweep study configs: epoch based, so every arm sees the same images
# whatever its batch size; the LR is written for 8 images per batch (0.01 per image, the demo's
# rate) and norm_sweep scales it linearly to the arm's batch; warm-up is the first epoch, the
# LR drops x0.1 for the last one. One checkpoint at the end (norm_sweep evaluates it with
# tools/test.py). 3 epochs of the 400 training images keep one arm-seed near 2 min on one CPU
# thread at 1 image per batch (1,200 steps). A fixed seed gives every arm of that seed the same
# data order and initialization.
_base_ = 'mmdet::_base_/default_runtime.py'

max_epochs = 3
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
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[2], gamma=0.1)
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
