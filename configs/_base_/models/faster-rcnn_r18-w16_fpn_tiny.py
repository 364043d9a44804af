# A CPU-sized Faster R-CNN for the tiny dataset: ResNet-18 with 16 base channels trained from
# scratch (no download), FPN with 64 channels, the 4conv1fc box head, BN with live statistics
# everywhere (configs that include this swap the norm), 3 classes.
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'
norm_cfg = dict(type='BN', requires_grad=True)
width = 16
model = dict(
    backbone=dict(
        depth=18,
        base_channels=width,
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=None),
    neck=dict(
        in_channels=[width, width * 2, width * 4, width * 8],
        out_channels=64,
        norm_cfg=norm_cfg),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            in_channels=64,
            conv_out_channels=64,
            fc_out_channels=256,
            norm_cfg=norm_cfg,
            num_classes=3)),
    # at most 3 objects per 160 px image: far fewer proposals and RoIs than COCO needs
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))
