# The norm_sweep study's *fine-tune* setting on the neutral set (the CBN and XBN papers' detection
# setting): the backbone starts from weights pretrained by the project on a separate task
# (`make pretrain`: checkpoints/r18-w16_photo-digit-crops.pth, 10 digits + background on 32 px
# photo crops) and keeps its BN frozen (statistics and affine) with the stem and first stage
# frozen, as mmdet's ImageNet-pretrained configs do; the compared norm goes in FPN and the
# 4conv1fc head (norm_sweep --parts neck heads). Everything else is the scratch config's.
_base_ = './faster-rcnn_r18-w16_fpn_bn_scratch_photo-digits.py'
model = dict(
    backbone=dict(
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        frozen_stages=1,
        init_cfg=dict(
            _delete_=True, type='Pretrained',
            checkpoint='checkpoints/r18-w16_photo-digit-crops.pth')))
