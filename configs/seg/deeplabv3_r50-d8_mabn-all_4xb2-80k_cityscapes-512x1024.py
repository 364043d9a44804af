# DeepLabV3 R-50-D8, Cityscapes 512x1024, 4 GPUs x 2 crops, 80k: the base with the norm of
# the backbone (norm_eval=False, as the base), the decode head and the auxiliary head replaced.
# MABN (arXiv 2001.06838) with weight-centralized convs (CenConv2d) in the stem, every
# bottleneck and both heads; the official layer defaults (SMA window 16: 2 crops emulating 32).
# MABN fine-tunes a backbone trained with weight centralization: the closest derivable one
# is the base's BN ResNetV1c converted (centralized filters, BN mean dropped), an
# approximation (README.md):
#   python tools/model_converters/resnet_to_mabn.py open-mmlab://resnet50_v1c \
#       checkpoints/resnet50_v1c-mabn-wc.pth
_base_ = './deeplabv3_r50-d8_syncbn-all_4xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='MABN', requires_grad=True)
conv_cfg = dict(type='CenConv2d')
model = dict(
    pretrained=None,
    backbone=dict(
        conv_cfg=conv_cfg,
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50_v1c-mabn-wc.pth')),
    decode_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg),
    auxiliary_head=dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg))
