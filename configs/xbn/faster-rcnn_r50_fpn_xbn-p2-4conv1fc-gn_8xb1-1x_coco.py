# faster-rcnn_r50_fpn_xbn-p2-4conv1fc-gn at 8 GPUs x 1 image. Linear LR rule:
# lr 0.02 per 16 images -> 0.01 for 8; `tools/train.py --auto-scale-lr` rescales from 8.
_base_ = './faster-rcnn_r50_fpn_xbn-p2-4conv1fc-gn_8xb2-1x_coco.py'
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
