# The neutral detection proxy (mmnorm_plugin.datasets.photo_digits, `make data`): real
# handwritten digits (4 classes: 0, 1, 4, 7) on crops of real photographs, 64x64 px, 400 train /
# 500 val images, COCO bbox (and segm) metrics. Per-image statistics vary as photographs make them
# vary; photometric distortion is a *training* augmentation here (mmdet's
# PhotoMetricDistortion), never baked into the stored images. No flip: a mirrored 2 or 5 is not
# the same digit.
_base_ = './tiny_coco_detection.py'

data_root = 'data/photo_digits/'
metainfo = dict(
    classes=('0', '1', '4', '7'),
    palette=[(220, 20, 60), (119, 11, 32), (0, 0, 142), (0, 0, 230)])
image_scale = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
