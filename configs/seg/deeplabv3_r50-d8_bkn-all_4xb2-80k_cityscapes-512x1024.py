# DeepLabV3 R-50-D8, Cityscapes 512x1024, 4 GPUs x 2 crops, 80k: the base with the norm of
# the backbone (norm_eval=False, as the base), the decode head and the auxiliary head replaced.
# BKN (arXiv 1802.03133), prior_weight 0.9 (the official micro-batch gain). BKN keeps BN's
# parameter and buffer names: the base's ImageNet BN weights load unchanged
_base_ = './deeplabv3_r50-d8_syncbn-all_4xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='BKN', requires_grad=True, prior_weight=0.9)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
