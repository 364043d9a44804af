# The same at 8 GPUs x 1 image = 8 images per iteration. Linear LR rule: lr = 0.02 per 16 images,
# so 0.02 * 8 / 16 = 0.01; `tools/train.py --auto-scale-lr` rescales from base_batch_size=8 for
# another GPU count.
_base_ = './mask-rcnn_r50_fpn_2x_coco.py'
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
