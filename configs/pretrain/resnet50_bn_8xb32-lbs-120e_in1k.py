# ResNet-50 with BN, 8 GPUs x 32 images, at the MABN release's ImageNet recipe (megvii-model/MABN
# cls/train.py): 120 epochs, SGD lr 0.1 per 256 images, momentum 0.9, weight decay 1e-4 on every
# parameter, lr x0.1 at epochs 30/60/90 (its fourth step, at 120, is the end), label smoothing
# 0.1, PCA lighting noise (alphastd 0.1) after the random crop and flip. The release's "norm batch
# 32" BN row. Not the release's: mmpretrain's mean/std input normalization (it feeds raw BGR) and
# its epoch sampler (it draws 5000 x 256 images with replacement per "epoch").
_base_ = './resnet50_bn_8xb32_in1k.py'
model = dict(head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # ImageNet's pixel PCA, in BGR order (the loaded images' order)
    dict(type='Lighting', eigval=[55.4625, 4.7940, 1.1475],
         eigvec=[[-0.5836, -0.6948, 0.4203], [-0.5808, -0.0045, -0.8140],
                 [-0.5675, 0.7192, 0.4009]], alphastd=0.1, to_rgb=False),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(max_epochs=120)
