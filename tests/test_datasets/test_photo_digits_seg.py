"""The neutral set's semantic maps: exactly its COCO masks, deterministic, in mmseg's layout."""
import hashlib
import json
import os.path as osp

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mmnorm_plugin.datasets.photo_digits_seg import (IGNORE_INDEX, SEG_CLASSES,
                                                     make_photo_digits_seg, semantic_map,
                                                     write_semantic_maps)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp('seg')
    make_photo_digits_seg(str(root), num_train=6, num_val=4)
    return root


def _digest(folder):
    h = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir()):
        h.update(name.encode() + (folder / name).read_bytes())
    return h.hexdigest()


def test_maps_are_the_coco_masks(root):
    for split, count in (('train', 6), ('val', 4)):
        coco = json.loads((root / 'annotations' / f'instances_{split}.json').read_text())
        assert [c['name'] for c in coco['categories']] == list(SEG_CLASSES[1:])
        maps = sorted((root / 'seg_maps' / split).iterdir())
        assert [p.name for p in maps] == sorted(i['file_name'] for i in coco['images'])
        assert len(maps) == count
        for image in coco['images']:
            label_map = np.asarray(Image.open(root / 'seg_maps' / split / image['file_name']))
            assert label_map.dtype == np.uint8 and label_map.shape == (64, 64)
            expected = np.zeros((64, 64), dtype=np.uint8)
            anns = [a for a in coco['annotations'] if a['image_id'] == image['id']]
            assert anns
            for ann in anns:
                expected[mask_utils.decode(ann['segmentation']).astype(bool)] = ann['category_id']
            np.testing.assert_array_equal(label_map, expected)


def test_same_seed_same_bytes(root, tmp_path):
    make_photo_digits_seg(str(tmp_path), num_train=6, num_val=4)
    for split in ('train', 'val'):
        assert _digest(root / 'seg_maps' / split) == _digest(tmp_path / 'seg_maps' / split)
        assert _digest(root / split) == _digest(tmp_path / split)


def _rle(box, size=8):
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def test_overlap_of_two_classes_is_ignored_and_unknown_categories_refused():
    anns = [dict(id=1, category_id=7, segmentation=_rle((0, 0, 4, 4))),
            dict(id=2, category_id=9, segmentation=_rle((2, 2, 6, 6))),
            dict(id=3, category_id=7, segmentation=_rle((0, 6, 2, 8))),
            dict(id=4, category_id=7, segmentation=_rle((1, 6, 3, 8)))]
    out = semantic_map(anns, 8, 8, {7: 1, 9: 2})
    assert out[0, 0] == 1 and out[5, 5] == 2 and out[7, 7] == 0
    assert (out[2:4, 2:4] == IGNORE_INDEX).all()
    assert (out[6:8, 0:3] == 1).all()  # overlap within one class is that class
    polygon = dict(id=5, category_id=9, segmentation=[[0, 0, 4, 0, 4, 4, 0, 4]])
    assert semantic_map([polygon], 8, 8, {9: 2})[1, 1] == 2
    with pytest.raises(KeyError, match='category_id 3'):
        semantic_map([dict(id=1, category_id=3, segmentation=_rle((0, 0, 2, 2)))], 8, 8, {7: 1})


def test_missing_annotations_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match='make data'):
        write_semantic_maps(str(tmp_path))
    assert not (tmp_path / 'seg_maps').exists()


def test_mmseg_reads_the_layout(root):
    pytest.importorskip('mmseg', reason='mmsegmentation is the .[seg] extra')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    base = Config.fromfile(osp.join(ROOT, 'configs', 'seg', '_base_', 'photo_digits_seg.py'))
    init_default_scope('mmseg')
    dataset_cfg = base.val_dataloader.dataset
    dataset_cfg.data_root = str(root)
    dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == 4 and dataset.metainfo['classes'] == SEG_CLASSES
    sample = dataset[0]
    labels = sample['data_samples'].gt_sem_seg.data
    assert labels.shape == (1, 64, 64) and set(labels.unique().tolist()) <= set(range(5))
    assert labels.max() > 0  # a digit
    assert osp.basename(sample['data_samples'].img_path) == osp.basename(
        sample['data_samples'].seg_map_path)
