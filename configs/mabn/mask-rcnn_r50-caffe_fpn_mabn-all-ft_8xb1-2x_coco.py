# mask-rcnn_r50-caffe_fpn_mabn-all-ft at 8 GPUs x 1 image, 2x.
_base_ = './mask-rcnn_r50-caffe_fpn_mabn-all-ft_8xb2-2x_coco.py'

train_dataloader = dict(batch_size=1)
# Linear LR rule: lr 0.02 per 16 images, so 8 GPUs x 1 image = 8 images -> lr 0.01.
# `tools/train.py --auto-scale-lr` rescales from base_batch_size=8 for other GPU counts.
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
# The SMA window keeps the 32 images of the 8xb2 configs: 32 iterations of 1 image (the official
# MABN2d(B, real_B=32) at B=1). The checkpoint's 16-row window cannot fill a 32-row one, so it
# is converted with the counter and window restarted:
#   python tools/model_converters/mabn_official_to_mmdet.py R50-wc.pth \
#       checkpoints/mabn/resnet50-caffe_mabn-wc_official-restart.pth --restart
window = dict(buffer_size=32)
model = dict(
    backbone=dict(
        norm_cfg=window,
        init_cfg=dict(checkpoint='checkpoints/mabn/resnet50-caffe_mabn-wc_official-restart.pth')),
    neck=dict(norm_cfg=window),
    roi_head=dict(
        mask_head=dict(norm_cfg=window),
        bbox_head=dict(norm_cfg=window)))
