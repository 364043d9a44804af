# ResNet-50 with BN at 2 images per GPU, gradients over 256 (8 GPUs x 2, 16 accumulated
# iterations), at the MABN release's recipe: its "norm batch 2" BN row, and the BN reference of
# the MABN config. The release simulates this inside batches of 32 (statistics over 2 images,
# gradients over 256); accumulation computes the same. auto_scale_lr: see the 8xb2-acc16 config.
_base_ = './resnet50_bn_8xb32-lbs-120e_in1k.py'
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(accumulative_counts=16)
auto_scale_lr = dict(base_batch_size=16)
