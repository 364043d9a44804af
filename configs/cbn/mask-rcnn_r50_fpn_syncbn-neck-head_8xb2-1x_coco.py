# Mask R-CNN R50-FPN with SyncBN in the FPN, the 4conv1fc box head and the 4-conv mask head,
# frozen-BN ImageNet backbone: the "SyncBN" row of the CBN release's table
# (configs/cbn/mask_rcnn_r50_fpn_syncbn_1x.py). SyncBN pools the statistics of all GPUs
# (16 images at 8xb2, 8 at 8xb1; 16 in the release); on a single process mmengine turns it into
# BN. Solver and RPN settings of the release: see the base. 8 GPUs x 2 images, lr 0.02, 1x.
_base_ = './mask-rcnn_r50_fpn_4conv1fc_8xb2-1x_coco.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
