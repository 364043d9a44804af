# Mask R-CNN R50-FPN, BGN in backbone, FPN, 4conv1fc box head and mask head; 8 GPUs x 1 image,
# 1x.
_base_ = './mask-rcnn_r50_fpn_bgn-all_8xb2-1x_coco.py'

train_dataloader = dict(batch_size=1)
# Linear LR rule: lr 0.02 per 16 images, so 8 GPUs x 1 image = 8 images -> lr 0.01.
# `tools/train.py --auto-scale-lr` rescales from base_batch_size=8 for other GPU counts.
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
