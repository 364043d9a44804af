# ResNet-50 with BN at 2 images per GPU (8 GPUs x 2), gradients accumulated over 16 iterations:
# every norm sees 2 images, every optimizer step 256, so the base's solver (lr 0.1 per 256 images,
# 100 epochs) applies unchanged. This is the small-batch ImageNet setting of the MABN release (its
# "norm batch 2" rows: statistics over 2 images, gradients over 256) and the BN reference of the
# BGN config. auto_scale_lr counts images per iteration (8 x 2 = 16), not per step: base 16 keeps
# lr 0.1 for this layout, and `--auto-scale-lr` rescales it for other GPU counts.
_base_ = './resnet50_bn_8xb32_in1k.py'
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(accumulative_counts=16)
auto_scale_lr = dict(base_batch_size=16)
