# Faster R-CNN R50-FPN with CBN (arXiv 2002.05712) in the FPN and the 4conv1fc box head, the
# official repo's detection setup (the "CBN" row of its table): the ImageNet BN backbone keeps
# frozen statistics (norm_eval=True, frozen_stages=1, mmdet's defaults), the RPN head has no norm;
# the release's solver and RPN settings come from the base (grad clip 35, warm-up 1/3 over 500
# iterations, 2000 proposals per image). Window of buffer_num=3 past iterations (4 batches);
# plain BN for the first 8 of 12 epochs (the released configs' `burnin=8`, meant as epochs: see
# README.md), set by CBNBurnInHook from the dataloader length. 8 GPUs x 2 images, lr 0.02, 1x.
_base_ = './faster-rcnn_r50_fpn_4conv1fc_8xb2-1x_coco.py'
norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg)))
custom_hooks = [dict(type='CBNBurnInHook', burnin_epochs=8)]
