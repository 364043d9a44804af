# The fine-tune setting on the hard tiny set: the project's pretrained backbone (`make pretrain`)
# with frozen BN, the compared norm in FPN and head (norm_sweep --parts neck heads).
_base_ = './faster-rcnn_r18-w16_fpn_bn_scratch_tiny-coco-hard.py'
model = dict(
    backbone=dict(
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        frozen_stages=1,
        init_cfg=dict(
            _delete_=True, type='Pretrained',
            checkpoint='checkpoints/r18-w16_photo-digit-crops.pth')))
