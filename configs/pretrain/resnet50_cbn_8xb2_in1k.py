# ResNet-50 with Cross-Iteration BN (arXiv 2002.05712) at 2 images per GPU (8 GPUs x 2, no
# accumulation: the BN config it inherits). The CBN release has no classification code and its
# ImageNet settings are not verified here, so the window is the release's (buffer_num=3: the
# current and 3 past iterations, 8 images per statistic) and the burn-in is our choice: plain BN
# until the first LR drop (epoch 30 of 100), as the release's COCO configs switch the window on at
# their first LR drop (8 of 12 epochs; CBNBurnInHook converts epochs to iterations).
_base_ = './resnet50_bn_8xb2_in1k.py'
model = dict(backbone=dict(norm_cfg=dict(type='CBN', buffer_num=3, requires_grad=True)))
custom_hooks = [dict(type='CBNBurnInHook', burnin_epochs=30)]
