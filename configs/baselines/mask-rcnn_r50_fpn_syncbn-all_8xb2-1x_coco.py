# Baseline: SyncBN (statistics over all GPUs: 8 x 2 = 16 images) in backbone, FPN, the 4conv1fc
# box head and the mask head. On a single process mmengine reverts SyncBN to BN.
_base_ = '../_base_/mask-rcnn_r50_fpn_1x_coco.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
