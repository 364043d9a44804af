# Faster R-CNN R50-FPN, CBN in the FPN and box head; 8 GPUs x 1 image, 1x.
_base_ = './faster-rcnn_r50_fpn_cbn-neck-head_8xb2-1x_coco.py'

train_dataloader = dict(batch_size=1)
# Linear LR rule: lr 0.02 per 16 images, so 8 GPUs x 1 image = 8 images -> lr 0.01.
# `tools/train.py --auto-scale-lr` rescales from base_batch_size=8 for other GPU counts.
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
# The window keeps the 8 images per GPU of the 8xb2 configs: 8 iterations of 1 image
# (buffer_num=7) instead of 4 of 2. At half the LR each iteration moves the weights about half
# as far, so the oldest entry is as stale (and the Taylor compensation as accurate) as at 8xb2.
window = dict(buffer_num=7)
model = dict(
    neck=dict(norm_cfg=window),
    roi_head=dict(
        bbox_head=dict(norm_cfg=window)))
# The burn-in stays 8 epochs: CBNBurnInHook reads the (now doubled) iterations per epoch.
