# Mask R-CNN R50-FPN, CBN in FPN, 4conv1fc box head and mask head; 8 GPUs x 1 image, 1x.
_base_ = './mask-rcnn_r50_fpn_cbn-neck-head_8xb2-1x_coco.py'

train_dataloader = dict(batch_size=1)
# Linear LR rule: lr 0.02 per 16 images, so 8 GPUs x 1 image = 8 images -> lr 0.01.
# `tools/train.py --auto-scale-lr` rescales from base_batch_size=8 for other GPU counts.
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
# The burn-in stays 8 epochs: CBNBurnInHook reads the (now doubled) iterations per epoch.
