"""The neutral proxy: real photographs and real handwriting, valid COCO, deterministic."""
import hashlib
import json
import os.path as osp

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmnorm_plugin.datasets.photo_digits import DIGITS, make_photo_digits, photo_sources


def _digest(root):
    h = hashlib.sha256()
    for split in ('train', 'val'):
        h.update(open(osp.join(root, 'annotations', f'instances_{split}.json'), 'rb').read())
        for i in range(1, 4):
            h.update(open(osp.join(root, split, f'{i:06d}.png'), 'rb').read())
    return h.hexdigest()


@pytest.fixture(scope='module')
def sets(tmp_path_factory):
    a, b = tmp_path_factory.mktemp('a'), tmp_path_factory.mktemp('b')
    make_photo_digits(str(a), num_train=12, num_val=10)
    make_photo_digits(str(b), num_train=12, num_val=10)
    return a, b


def test_same_seed_same_bytes(sets):
    assert _digest(sets[0]) == _digest(sets[1])


def test_annotations_are_valid_coco_with_exact_boxes_and_masks(sets):
    root = sets[0]
    coco = COCO(str(root / 'annotations' / 'instances_val.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == [str(d) for d in DIGITS]
    assert len(coco.getImgIds()) == 10 and coco.getAnnIds()
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(mask)
        # the RLE is the exact mask: box and area are the mask's own
        x, y, w, h = ann['bbox']
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        assert mask.sum() == ann['area'] == mask_utils.area(ann['segmentation'])
        assert 1 <= ann['category_id'] <= len(DIGITS) and ann['iscrowd'] == 0


def test_backgrounds_are_photographs_not_a_synthetic_gain(sets):
    """Per-image channel statistics spread as photographs' do (no constant image), and the
    stored images are the crops themselves: no value clipping from a baked-in gain."""
    photos = photo_sources()
    assert len(photos) >= 3 and all(p.ndim == 3 and min(p.shape[:2]) >= 240 for p in photos)
    imgs = [np.asarray(Image.open(sets[0] / 'train' / f'{i:06d}.png'), dtype=np.float32)
            for i in range(1, 13)]
    means = np.array([im.mean(axis=(0, 1)) for im in imgs])
    assert means.std(axis=0).min() > 5  # images differ in their statistics
    saturated = np.mean([((im == 0) | (im == 255)).mean() for im in imgs])
    assert saturated < 0.05


def test_bad_arguments_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match='side_range'):
        make_photo_digits(str(tmp_path / 'x'), side_range=(40, 80))
    with pytest.raises(ValueError, match='digits'):
        make_photo_digits(str(tmp_path / 'y'), digits=(7, 1))
    assert not (tmp_path / 'x').exists() and not (tmp_path / 'y').exists()
