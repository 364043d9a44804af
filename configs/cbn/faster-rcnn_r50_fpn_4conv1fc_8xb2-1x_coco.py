# Faster R-CNN R50-FPN with the 4conv1fc box head and NO normalization in FPN and heads (convs with
# bias); ImageNet BN backbone with frozen statistics and trainable affine (norm_eval=True,
# frozen_stages=1, mmdet's defaults): the "-" row of the CBN release's table
# (Howal/Cross-iterationBatchNorm, configs/cbn/faster_rcnn_r50_fpn_1x.py). The base of this folder's
# Faster R-CNN configs: it carries the release's solver and RPN settings, which mmdet 3 does not
# default to -- gradient clipping at max-norm 35, linear warm-up over 500 iterations from 1/3 of the
# LR, 2000 RPN proposals per image. The release ran 4 GPUs x 4 images; here 8 GPUs x 2 images (the
# same 16 images per iteration, lr 0.02), 1x.
_base_ = '../_base_/faster-rcnn_r50_fpn_1x_coco.py'
model = dict(
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256)),
    # mmdet v0.6 had no rpn_proposal entry: training proposals used test_cfg.rpn, 2000 per level
    # before NMS and 2000 per image after it (mmdet 3's defaults are 2000/1000 and 1000/1000)
    train_cfg=dict(rpn_proposal=dict(nms_pre=2000, max_per_img=2000)),
    test_cfg=dict(rpn=dict(nms_pre=2000, max_per_img=2000)))
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
