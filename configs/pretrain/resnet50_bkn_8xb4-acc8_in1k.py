# ResNet-50 with Batch Kalman Normalization (arXiv 1802.03133; NeurIPS 2018 "Kalman
# Normalization") at 4 images per GPU, the NeurIPS abstract's ResNet-50 ImageNet batch size. The
# official ImageNet code was never released (CIFAR only), so the setting and solver are the BN
# reference's (8 GPUs x 4, gradients over 256). prior_weight 0.9: the official micro-batch gain,
# as configs/bkn. The stem norm has no BKN before it and runs as BN (see BKN's docstring).
_base_ = './resnet50_bn_8xb4-acc8_in1k.py'
model = dict(backbone=dict(norm_cfg=dict(type='BKN', prior_weight=0.9, requires_grad=True)))
