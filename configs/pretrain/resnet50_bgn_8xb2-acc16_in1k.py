# ResNet-50 with Batch Group Normalization (arXiv 2012.02782) at 2 images per GPU (8 GPUs x 2,
# gradients over 256: the BN config it inherits). The paper's headline is ResNet-50 on ImageNet at
# batch size 2 (BN against BGN); its solver and group count are not verified (no official code,
# paper body not read), so the setting and solver are the BN reference's. 32 groups: they divide
# every width of ResNet-50 and match configs/bgn, whose detectors this backbone loads into
# (running statistics are per group: another count would not load).
_base_ = './resnet50_bn_8xb2-acc16_in1k.py'
model = dict(backbone=dict(norm_cfg=dict(type='BGN', num_groups=32, requires_grad=True)))
