# ResNet-50 with BN at 2 images per GPU, 8 GPUs x 2 = 16 images per optimizer step, no gradient
# accumulation: a true small batch, lr 0.1 x 16/256 = 0.00625 by the linear rule, the base's 100
# epochs (16x as many steps). The BN reference of the CBN config: CBN's window spans optimizer
# steps (it compensates weight changes between them), so accumulating micro-batches under one step
# would leave it nothing to compensate.
_base_ = './resnet50_bn_8xb32_in1k.py'
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(optimizer=dict(lr=0.00625))
auto_scale_lr = dict(base_batch_size=16)
