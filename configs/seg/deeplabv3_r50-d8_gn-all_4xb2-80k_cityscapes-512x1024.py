# DeepLabV3 R-50-D8, Cityscapes 512x1024, 4 GPUs x 2 crops, 80k: the base with the norm of
# the backbone (norm_eval=False, as the base), the decode head and the auxiliary head replaced.
# GN, 32 groups: the batch-independent reference. No GN ImageNet ResNetV1c is published: the
# base's BN weights initialise the convs and the GN affine parameters (BN's running statistics
# are unused keys); see README.md
_base_ = './deeplabv3_r50-d8_syncbn-all_4xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
