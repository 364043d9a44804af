# ResNet-50 with BN at 4 images per GPU (8 GPUs x 4), gradients accumulated over 8 iterations
# (every norm sees 4 images, every optimizer step 256): the BN reference of the BKN config, whose
# paper compares against BN at batch 4. Solver of the base (lr 0.1 per 256 images, 100 epochs);
# auto_scale_lr base 32 = images per iteration of this layout (see the 8xb2-acc16 config).
_base_ = './resnet50_bn_8xb32_in1k.py'
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(accumulative_counts=8)
auto_scale_lr = dict(base_batch_size=32)
