# Mask R-CNN R50-FPN with CBN (arXiv 2002.05712) in the FPN, the 4conv1fc box head and the
# 4-conv mask head, the official repo's detection setup: the ImageNet BN backbone keeps frozen
# statistics (norm_eval=True, frozen_stages=1, mmdet's defaults), the RPN head has no norm.
# Window of buffer_num=3 past iterations (4 batches); plain BN for the first 8 of 12 epochs
# (the released configs' `burnin=8`, meant as epochs: see README.md), set by CBNBurnInHook
# from the dataloader length. 8 GPUs x 2 images, lr 0.02 (0.02 per 16 images), 1x.
_base_ = '../_base_/mask-rcnn_r50_fpn_1x_coco.py'
norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
custom_hooks = [dict(type='CBNBurnInHook', burnin_epochs=8)]
