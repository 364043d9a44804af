"""The embedded dataset is deterministic, consistent, and a valid mmdet CocoDataset."""
import filecmp
import json
import os.path as osp

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmnorm_plugin.utils.tiny_coco import CLASSES, make_tiny_coco


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny')
    make_tiny_coco(str(root / 'a'), num_train=6, num_val=4, seed=3)
    make_tiny_coco(str(root / 'b'), num_train=6, num_val=4, seed=3)
    return root


def test_same_seed_same_bytes(tiny):
    for rel in ('annotations/instances_train.json', 'annotations/instances_val.json',
                'train/000001.png', 'val/000004.png'):
        assert filecmp.cmp(tiny / 'a' / rel, tiny / 'b' / rel, shallow=False), rel


def test_annotations_are_consistent_coco(tiny):
    coco = COCO(str(tiny / 'a' / 'annotations' / 'instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == 6
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 6  # at least one object per image
    for ann in anns:
        img = coco.loadImgs(ann['image_id'])[0]
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        # bbox and area are those of the rasterised polygon
        assert ann['area'] == mask.sum() > 0
        x, y, w, h = ann['bbox']
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 0 <= x and x + w <= img['width'] and y + h <= img['height']


def test_train_and_val_differ(tiny):
    train = json.load(open(tiny / 'a' / 'annotations' / 'instances_train.json'))
    val = json.load(open(tiny / 'a' / 'annotations' / 'instances_val.json'))
    assert train['annotations'][0]['bbox'] != val['annotations'][0]['bbox']


def test_loads_as_mmdet_coco_dataset(tiny):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    dataset = CocoDataset(
        data_root=str(tiny / 'a'), ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), metainfo=dict(classes=CLASSES),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='PackDetInputs')])
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample['inputs'].shape[0] == 3
    assert len(sample['data_samples'].gt_instances) >= 1


@pytest.mark.parametrize('bad', [dict(num_train=0), dict(radius_range=(10., 90.))])
def test_bad_arguments_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        make_tiny_coco(str(tmp_path), **bad)
