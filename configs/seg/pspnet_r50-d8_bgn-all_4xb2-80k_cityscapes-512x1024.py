# PSPNet R-50-D8, Cityscapes 512x1024, 4 GPUs x 2 crops, 80k: the base with the norm of
# the backbone (norm_eval=False, as the base), the decode head and the auxiliary head replaced.
# BGN (arXiv 2012.02782), 32 groups (they divide every width of ResNetV1c-50 and the heads).
# The base's ImageNet BN weights load as they are: BGN pools each layer's running statistics
# into per-group ones when the weights are read
_base_ = './pspnet_r50-d8_syncbn-all_4xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='BGN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
