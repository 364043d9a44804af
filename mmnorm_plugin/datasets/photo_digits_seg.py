"""The neutral set as a semantic segmentation set: one label map per image from its COCO masks.

The neutral detection set (:mod:`mmnorm_plugin.datasets.photo_digits`: real handwritten digits
alpha-blended on crops of real photographs) stores every digit's exact mask as COCO RLE. A
semantic map needs nothing more: each pixel gets the class of the mask covering it, background
elsewhere. The maps are written next to the images, in the layout mmseg's ``BaseSegDataset``
reads (``data_prefix=dict(img_path='train', seg_map_path='seg_maps/train')``, both suffixes
``.png``)::

    data/photo_digits/train/000001.png           the image (unchanged)
    data/photo_digits/seg_maps/train/000001.png  uint8 labels: 0 background, 1..4 the digits

Classes follow the annotation file's category list in order (:data:`SEG_CLASSES` for the
neutral set: ``background``, ``0``, ``1``, ``4``, ``7``). A pixel that two masks claim gets
:data:`IGNORE_INDEX` (mmseg's ``ignore_index``); the neutral set places digits apart, so none
does. Deterministic: the same annotation file gives byte-identical PNG files.
"""
import json
import os
import os.path as osp
from typing import Dict, Sequence

import numpy as np
from PIL import Image

from .photo_digits import CLASSES, make_photo_digits

__all__ = ['SEG_CLASSES', 'SEG_PALETTE', 'IGNORE_INDEX', 'semantic_map',
           'write_semantic_maps', 'make_photo_digits_seg']

#: label 0 is the background, labels 1.. the neutral set's digit classes
SEG_CLASSES = ('background', ) + CLASSES
#: one RGB colour per class (mmseg's visualizer and ``metainfo``)
SEG_PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200))
#: the label of pixels no class owns (mmseg's default ``ignore_index``)
IGNORE_INDEX = 255


def semantic_map(annotations: Sequence[Dict], height: int, width: int,
                 labels: Dict[int, int]) -> np.ndarray:
    """The ``height x width`` uint8 label map of one image's COCO ``annotations``.

    ``labels`` maps a COCO ``category_id`` to its label (1..K). Pixels outside every mask are
    0; pixels inside two masks of different labels are :data:`IGNORE_INDEX`.
    """
    from pycocotools import mask as mask_utils
    out = np.zeros((height, width), dtype=np.uint8)
    owned = np.zeros((height, width), dtype=bool)
    for ann in annotations:
        if ann['category_id'] not in labels:
            raise KeyError(f"annotation {ann.get('id')} has category_id {ann['category_id']}, "
                           f'which is not in the categories {sorted(labels)}')
        segm = ann['segmentation']
        if isinstance(segm, list):  # polygons
            rles = mask_utils.frPyObjects(segm, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(segm.get('counts'), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = segm
        mask = mask_utils.decode(rle).astype(bool)
        if mask.shape != (height, width):
            raise ValueError(f"annotation {ann.get('id')}: mask {mask.shape} on a "
                             f'{height}x{width} image')
        label = labels[ann['category_id']]
        clash = mask & owned & (out != label)
        out[mask] = label
        out[clash] = IGNORE_INDEX
        owned |= mask
    return out


def write_semantic_maps(root: str, splits: Sequence[str] = ('train', 'val')) -> Dict[str, str]:
    """Write ``root/seg_maps/<split>/<image stem>.png`` for every image of
    ``root/annotations/instances_<split>.json``; return ``{split: folder}``.

    Labels are 1..K in the order of the file's ``categories`` (0 is the background).
    """
    folders = {}
    for split in splits:
        ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
        if not osp.isfile(ann_file):
            raise FileNotFoundError(
                f'{ann_file} does not exist: make the neutral set first (`make data`, or '
                'mmnorm_plugin.datasets.make_photo_digits)')
        with open(ann_file) as f:
            coco = json.load(f)
        labels = {cat['id']: i + 1 for i, cat in enumerate(coco['categories'])}
        if len(labels) >= IGNORE_INDEX:
            raise ValueError(f'{len(labels)} categories do not fit uint8 labels below '
                             f'{IGNORE_INDEX}')
        by_image: Dict[int, list] = {}
        for ann in coco['annotations']:
            by_image.setdefault(ann['image_id'], []).append(ann)
        folder = osp.join(root, 'seg_maps', split)
        os.makedirs(folder, exist_ok=True)
        for image in coco['images']:
            label_map = semantic_map(by_image.get(image['id'], []), image['height'],
                                     image['width'], labels)
            stem = osp.splitext(osp.basename(image['file_name']))[0]
            Image.fromarray(label_map).save(osp.join(folder, f'{stem}.png'))
        folders[split] = folder
    return folders


def make_photo_digits_seg(out_dir: str, **kwargs) -> Dict[str, str]:
    """Write the neutral set (:func:`~.photo_digits.make_photo_digits` with ``kwargs``; the
    same arguments give the same images) and its semantic maps; return ``{split: folder}`` of
    the maps."""
    make_photo_digits(out_dir, **kwargs)
    return write_semantic_maps(out_dir)
