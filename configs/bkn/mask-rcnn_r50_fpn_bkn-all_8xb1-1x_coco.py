# As mask-rcnn_r50_fpn_bkn-all_8xb2-1x_coco.py with 1 image per GPU (8 GPUs x 1 image).
_base_ = './mask-rcnn_r50_fpn_bkn-all_8xb2-1x_coco.py'
train_dataloader = dict(batch_size=1)
# Linear LR rule: 0.02 per 16 images, so 0.01 for 8 x 1; auto_scale_lr rescales from this base.
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
