# ResNet-50 with Moving Average BN (arXiv 2001.06838, ICLR 2020) and weight-centralized convs
# (CenConv2d) at 2 images per GPU, gradients over 256, at the release's ImageNet recipe (the BN
# config it inherits). MABN's defaults are the release's formal layer (B=2 in real_B=32: a 16-entry
# moving average, EMA keep factor 0.98): its moving averages run over the 16 micro-batches of each
# optimizer step, as the release's classification layer averages 16 groups of 2 inside a batch of
# 32. The release's classification layer holds the renormalization for 100 steps; the formal layer
# kept here holds it for 1000 calls (about 60 steps here). The backbone loads into
# configs/mabn/*-ft_* with prefix='backbone.'.
_base_ = './resnet50_bn_8xb2-acc16-lbs-120e_in1k.py'
model = dict(
    backbone=dict(norm_cfg=dict(type='MABN', requires_grad=True),
                  conv_cfg=dict(type='CenConv2d')))
