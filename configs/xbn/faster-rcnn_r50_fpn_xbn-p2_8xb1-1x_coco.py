# faster-rcnn_r50_fpn_xbn-p2 at 1 image per GPU (8 GPUs x 1 image). Linear LR rule: lr = 0.02 per 16 images, so
# 0.01 for 8; auto_scale_lr.base_batch_size=8 lets --auto-scale-lr rescale for other GPU counts.
_base_ = './faster-rcnn_r50_fpn_xbn-p2_8xb2-1x_coco.py'
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
