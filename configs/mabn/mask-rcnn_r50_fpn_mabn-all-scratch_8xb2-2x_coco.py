# Mask R-CNN R50-FPN from scratch with MABN (arXiv 2001.06838) and weight-centralized convs
# (CenConv2d) in the stem, every bottleneck, the FPN and the 4conv1fc box head and the mask head;
# 8 GPUs x 2 images, 2x, lr 0.02: the official megvii-model/MABN detection setup (README.md).
_base_ = '../_base_/mask-rcnn_r50_fpn_2x_coco.py'

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
            norm_cfg=norm_cfg),
        mask_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)))
# mmdet's solver: weight decay 1e-4 on every parameter, MABN's gamma and beta included
# (maskrcnn-benchmark, used by the authors, by default exempts biases from decay and doubles
# their LR; not replicated). MABN subclasses _BatchNorm, so
# optim_wrapper.paramwise_cfg.norm_decay_mult=0. (mmdet's from-scratch GN rule) applies to it.
