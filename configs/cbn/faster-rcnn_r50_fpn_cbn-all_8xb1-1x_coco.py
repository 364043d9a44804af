# Faster R-CNN R50-FPN, CBN in backbone, FPN and 4conv1fc box head; 8 GPUs x 1 image, 1x.
_base_ = './faster-rcnn_r50_fpn_cbn-all_8xb2-1x_coco.py'

train_dataloader = dict(batch_size=1)
# Linear LR rule: lr 0.02 per 16 images, so 8 GPUs x 1 image = 8 images -> lr 0.01.
# `tools/train.py --auto-scale-lr` rescales from base_batch_size=8 for other GPU counts.
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
# The window keeps the 8 images per GPU of the 8xb2 config: buffer_num=7 (see
# faster-rcnn_r50_fpn_cbn-neck-head_8xb1-1x_coco.py).
window = dict(buffer_num=7)
model = dict(
    backbone=dict(norm_cfg=window),
    neck=dict(norm_cfg=window),
    roi_head=dict(bbox_head=dict(norm_cfg=window)))
