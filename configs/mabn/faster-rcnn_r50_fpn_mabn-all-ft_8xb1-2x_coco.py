# Faster R-CNN R50-FPN, MABN + CenConv2d everywhere, fine-tune; 8 GPUs x 1 image, 2x.
_base_ = './faster-rcnn_r50_fpn_mabn-all-ft_8xb2-2x_coco.py'

train_dataloader = dict(batch_size=1)
# Linear LR rule: lr 0.02 per 16 images, so 8 GPUs x 1 image = 8 images -> lr 0.01.
# `tools/train.py --auto-scale-lr` rescales from base_batch_size=8 for other GPU counts.
optim_wrapper = dict(optimizer=dict(lr=0.01))
auto_scale_lr = dict(base_batch_size=8)
# MABN keeps its window of 16 iterations, i.e. now statistics of 16 images instead of 32
# (buffer_size=32 would restore the emulated batch; we change one thing at a time).
