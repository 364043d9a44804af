# DeepLabV3 R-50-D8, Cityscapes 512x1024, 4 GPUs x 2 crops, 80k: the base with the norm of
# the backbone (norm_eval=False, as the base), the decode head and the auxiliary head replaced.
# CBN (arXiv 2002.05712), window of buffer_num=3 past iterations (4 x 2 = 8 crops per GPU,
# the crops one SyncBN statistic of the base sees). Plain BN for the first two thirds of the
# schedule, as the project's detection configs (8 of 12 epochs, CBN's release): no
# segmentation setting is published. The base's ImageNet BN weights load unchanged (same names)
_base_ = './deeplabv3_r50-d8_syncbn-all_4xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='CBN', requires_grad=True, buffer_num=3, burnin_iters=80000 * 2 // 3)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))
