# Faster R-CNN R50-FPN from scratch with MABN (arXiv 2001.06838) and weight-centralized convs
# (CenConv2d) in the stem, every bottleneck, the FPN and the 4conv1fc box head;
# 8 GPUs x 2 images, 2x, lr 0.02: the official megvii-model/MABN detection setup (README.md).
_base_ = '../_base_/faster-rcnn_r50_fpn_2x_coco.py'

# Layer defaults are the official ones: SMA window 16 (batch 2 emulating 32), EMA momentum 0.02
# (keep 0.98), SMA from iteration 100, renorm factor held at 1 for 1000 iterations, clip 5.
norm_cfg = dict(type='MABN', requires_grad=True)
# MABN does not center: every conv feeding it subtracts its filters' means instead.
conv_cfg = dict(type='CenConv2d')
model = dict(
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        # nothing frozen and MABN in training mode everywhere, as in the official
        # FREEZE_CONV_BODY_AT: -1; with mmdet's norm_eval=True MABN would run on R only.
        frozen_stages=-1,
        norm_eval=False,
        # Kaiming init everywhere as in mmdet's from-scratch GN configs and the official
        # code; zero gammas would only delay MABN's warm-up statistics of the last norms.
        zero_init_residual=False,
        init_cfg=None),
    neck=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg)))
# Solver of the official maskrcnn-benchmark code: biases (every parameter named `bias`, MABN's
# beta included) at 2x the LR and without weight decay (BIAS_LR_FACTOR=2, WEIGHT_DECAY_BIAS=0;
# gammas keep weight decay 1e-4), linear warm-up over 500 iterations from 1/3 of the LR
# (WARMUP_FACTOR), steps at epochs 16 and 22 of 24 (official: 120k and 160k of 180k iterations).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.bias': dict(lr_mult=2.0, decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1)
]
