"""The embedded dataset is deterministic, consistent, and a valid mmdet CocoDataset."""
import filecmp
import glob
import hashlib
import json
import os.path as osp

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmnorm_plugin.datasets.tiny_coco import CLASSES, make_tiny_coco

#: sha256 of the default set (seed 3, 6 train / 4 val) as written before the 'hard' variant
#: existed: annotation JSON bytes and decoded PNG pixels (PNG bytes depend on the zlib build).
DEFAULT_SET_SHA256 = '8473e546b59ca9dfc5eb84b1a31a363c34f7632f3f882b285076da5f308ec265'


def _digest(root) -> str:
    sha = hashlib.sha256()
    for path in sorted(glob.glob(osp.join(str(root), '*', '*'))):
        sha.update(osp.relpath(path, str(root)).encode())
        with open(path, 'rb') as f:
            sha.update(np.asarray(Image.open(path)).tobytes() if path.endswith('.png')
                       else f.read())
    return sha.hexdigest()


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny')
    make_tiny_coco(str(root / 'a'), num_train=6, num_val=4, seed=3)
    make_tiny_coco(str(root / 'b'), num_train=6, num_val=4, seed=3)
    make_tiny_coco(str(root / 'hard'), num_train=16, num_val=4, seed=3, variant='hard')
    make_tiny_coco(str(root / 'hard2'), num_train=16, num_val=4, seed=3, variant='hard')
    make_tiny_coco(str(root / 'default16'), num_train=16, num_val=4, seed=3)
    return root


def test_default_set_unchanged(tiny):
    assert _digest(tiny / 'a') == DEFAULT_SET_SHA256


def test_same_seed_same_bytes(tiny):
    for rel in ('annotations/instances_train.json', 'annotations/instances_val.json',
                'train/000001.png', 'val/000004.png'):
        assert filecmp.cmp(tiny / 'a' / rel, tiny / 'b' / rel, shallow=False), rel


def test_hard_variant_is_deterministic_and_new(tiny):
    assert _digest(tiny / 'hard') == _digest(tiny / 'hard2')
    assert _digest(tiny / 'hard') != _digest(tiny / 'default16')


@pytest.mark.parametrize('name,num_images', [('a', 6), ('hard', 16)])
def test_annotations_are_consistent_coco(tiny, name, num_images):
    coco = COCO(str(tiny / name / 'annotations' / 'instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == num_images
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= num_images  # at least one object per image
    for ann in anns:
        img = coco.loadImgs(ann['image_id'])[0]
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        # bbox and area are those of the rasterised polygon
        assert ann['area'] == mask.sum() > 0
        x, y, w, h = ann['bbox']
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert 0 <= x and x + w <= img['width'] and y + h <= img['height']


def _channel_means(root):
    return np.stack([np.asarray(Image.open(p), dtype=np.float64).mean(axis=(0, 1))
                     for p in sorted(glob.glob(osp.join(str(root), 'train', '*.png')))])


def test_hard_variant_varies_per_image(tiny):
    """What makes BN at batch 1 lose: images differ in their channel statistics (photometric
    gain/offset/cast); they are small (96 px: few values per deep channel) and hold more,
    smaller objects."""
    hard, default = _channel_means(tiny / 'hard'), _channel_means(tiny / 'default16')
    # spread of per-image channel means across images, averaged over RGB
    assert hard.std(axis=0).mean() > 2 * default.std(axis=0).mean()
    anns = {name: json.load(open(tiny / name / 'annotations' / 'instances_train.json'))
            ['annotations'] for name in ('hard', 'default16')}
    assert len(anns['hard']) > len(anns['default16'])
    median_area = {name: np.median([a['area'] for a in v]) for name, v in anns.items()}
    assert median_area['hard'] < 0.5 * median_area['default16']
    coco = COCO(str(tiny / 'hard' / 'annotations' / 'instances_val.json'))
    assert {(img['width'], img['height']) for img in coco.loadImgs(coco.getImgIds())} == {(96, 96)}


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


@pytest.mark.parametrize('bad', [
    dict(num_train=0),
    dict(radius_range=(10., 90.)),
    dict(radius_range=(10., 60.), variant='hard'),  # fits, but not after the 1.5x zoom
    dict(variant='easy'),
])
def test_bad_arguments_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        make_tiny_coco(str(tmp_path), **bad)
