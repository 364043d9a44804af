# The hard variant of the embedded toy dataset (tools/misc/make_tiny_coco.py --variant hard):
# 96x96 px images with strong per-image contrast/brightness/colour cast, per-image object zoom,
# 1..5 objects of about 8..36 px, 240 train / 60 val images, COCO bbox mAP. run_demo.sh generates
# it because data_root names it.
_base_ = './tiny_coco_detection.py'

data_root = 'data/tiny_coco_hard/'
image_scale = (96, 96)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
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
train_dataloader = dict(dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
