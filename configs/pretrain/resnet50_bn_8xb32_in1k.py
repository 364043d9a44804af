# ResNet-50 with BN on ImageNet-1k, 8 GPUs x 32 images: the large-batch reference of the
# small-batch configs in this folder. mmpretrain's own recipe (its resnet50_8xb32_in1k: SGD lr 0.1
# per 256 images, momentum 0.9, weight decay 1e-4, 100 epochs, lr x0.1 at epochs 30/60/90,
# RandomResizedCrop 224 + flip), which is also the official XBNBlock ImageNet recipe. Every
# config of the folder inherits from this file and changes only what its setting changes.
_base_ = [
    'mmpretrain::_base_/models/resnet50.py',
    'mmpretrain::_base_/datasets/imagenet_bs32.py',
    'mmpretrain::_base_/schedules/imagenet_bs256.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/plugin.py',
]
# explicit, so that a plugin norm swapped in below meets the same arguments
model = dict(backbone=dict(norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False))
