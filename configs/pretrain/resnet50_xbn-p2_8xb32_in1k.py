# XBNBlock-P2 ResNet-50 (Huang et al., CVPR 2022, arXiv 2203.10778) on ImageNet-1k at the official
# recipe, 8 GPUs x 32 images (the paper's ImageNet runs use batch 256, 100 epochs, lr 0.1 /10 every
# 30 epochs, weight decay 1e-4: the base's recipe). The backbone is mmdet's registry's XBNResNet
# (the plugin registers it there), used across scopes as 'mmdet.XBNResNet'; its BFN is GroupNorm
# with 64 groups capped at the width (the official ImageNet models, "GN_NG64"), after every 3x3
# conv and in the stem. mmdet's ResNet defaults to norm_eval=True (frozen BN, for fine-tuning):
# training from scratch needs False. The backbone loads into configs/xbn/*xbn-p2* (which use 32
# groups: GroupNorm stores no group count) with prefix='backbone.'.
_base_ = './resnet50_bn_8xb32_in1k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdet.XBNResNet',
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch',
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        bfn_cfg=dict(type='GN', num_groups=64, requires_grad=True),
        bfn_position='P2',
        stem_bfn=True))
