"""The neutral detection proxy: handwritten digits on crops of real photographs, in COCO format.

Why this set exists: the hard tiny set (:mod:`mmnorm_plugin.datasets.tiny_coco`, ``variant='hard'``)
gives every image its own synthetic gain, offset and colour cast. That rewards per-image
normalization (BN at 1 image evaluated with each image's own statistics beats every method there)
and has no counterpart in mmdet's COCO pipeline. Here the per-image statistics vary only as
photographs make them vary, and photometric distortion belongs to the *training pipeline*
(mmdet's ``PhotoMetricDistortion`` in ``configs/_base_/datasets/photo_digits_detection.py``),
never to the stored images.

* **Backgrounds**: square crops of real photographs that installed packages ship offline:
  scikit-learn's two sample images (``china.jpg``, ``flower.jpg``) and matplotlib's
  ``grace_hopper.jpg``. Each crop has a random side (48 to 240 px of the source, so textures
  appear at many scales), position and horizontal flip, and is resized to the image size.
* **Objects**: scikit-learn's real 8x8 handwritten digits of four classes (0, 1, 4, 7; the
  ``digits`` argument), train and val drawn from disjoint halves (val shows handwriting no
  training image contains), upscaled bilinearly to 18-30 px (``side_range``) and alpha-blended
  with an ink colour that contrasts with the crop's local luminance (dark ink on light ground,
  light on dark), 1 to 3 per image (``max_objects``), not overlapping. Four classes, not ten:
  at the studies' budget (1,200 steps at 1 image per batch) the ten-class version stayed too
  close to 0 mAP to compare norms (docs/study_norm_sweep_grid.md).
* **Size**: 400 train / 500 val images of 64x64 px by default.
* **Annotations**: the mask is the blended alpha > 0.5, stored as COCO RLE (exact, holes of a 0
  or a 4 included; polygons would fill them), with the exact bbox and area of that mask, so
  ``bbox`` and ``segm`` metrics both work.

Deterministic: the same ``seed`` writes byte-identical PNG and JSON files.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ['CLASSES', 'make_photo_digits', 'photo_sources', 'photo_digit_crops']

#: the digits drawn, one class each (see the module docstring for why four)
DIGITS = (0, 1, 4, 7)
CLASSES = tuple(str(d) for d in DIGITS)


def photo_sources() -> List[np.ndarray]:
    """The real photographs used as backgrounds (uint8 HxWx3), all shipped offline."""
    from sklearn.datasets import load_sample_images
    import matplotlib.cbook
    photos = [np.asarray(img, dtype=np.uint8) for img in load_sample_images().images]
    with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
        photos.append(np.asarray(Image.open(f).convert('RGB'), dtype=np.uint8))
    return photos


def _digits(keep: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The digits of classes ``keep`` (0-1 float images) and their class indices."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    chosen = np.isin(digits.target, keep)
    labels = np.searchsorted(np.asarray(sorted(keep)), digits.target[chosen])
    return digits.images[chosen].astype(np.float32) / 16.0, labels.astype(np.int64)


def _background(rng: np.random.Generator, photos: List[np.ndarray], size: int) -> np.ndarray:
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(rng.integers(48, min(240, h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    crop = np.asarray(crop, dtype=np.float32)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _make_image(rng, photos, digit_images, digit_labels, size, max_objects, side_range):
    img = _background(rng, photos, size)
    objects, boxes = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            side = int(rng.integers(side_range[0], side_range[1] + 1))
            x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            box = (x0, y0, x0 + side, y0 + side)
            if not any(x0 < b[2] + 1 and b[0] < box[2] + 1 and y0 < b[3] + 1
                       and b[1] < box[3] + 1 for b in boxes):
                break
        else:
            continue
        index = int(rng.integers(len(digit_images)))
        alpha = np.asarray(Image.fromarray(digit_images[index]).resize(
            (side, side), Image.BILINEAR), dtype=np.float32).clip(0, 1)
        region = img[y0:y0 + side, x0:x0 + side]
        light = region.mean() < 128
        ink = rng.uniform(165, 255, size=3) if light else rng.uniform(0, 90, size=3)
        region[...] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
        mask = np.zeros((size, size), dtype=bool)
        mask[y0:y0 + side, x0:x0 + side] = alpha > 0.5
        if not mask.any():
            continue
        boxes.append(box)
        objects.append((int(digit_labels[index]), mask))
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8)), objects


def _annotation(mask: np.ndarray, label: int, image_id: int, ann_id: int) -> Dict:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    return dict(id=ann_id, image_id=image_id, category_id=label + 1,
                segmentation=rle, area=float(mask.sum()),
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)], iscrowd=0)


def make_photo_digits(out_dir: str, num_train: int = 400, num_val: int = 500,
                      image_size: int = 64, max_objects: int = 3,
                      side_range: Tuple[int, int] = (18, 30), seed: int = 0,
                      digits: Sequence[int] = DIGITS) -> Dict[str, str]:
    """Write ``{train,val}/*.png`` and ``annotations/instances_{train,val}.json``; return the
    annotation paths. Train digits come from even, val digits from odd indices of
    scikit-learn's digits; photo crops from independent random streams."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f'need at least one image per split, got {num_train}/{num_val}')
    if not (4 <= side_range[0] <= side_range[1] <= image_size):
        raise ValueError(f'side_range {side_range} does not fit {image_size}px images')
    if sorted(set(digits)) != list(digits) or not set(digits) <= set(range(10)):
        raise ValueError(f'digits must be increasing and within 0..9, got {digits}')
    photos = photo_sources()
    images, labels = _digits(digits)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=str(d), supercategory='digit')
                  for i, d in enumerate(digits)]
    paths = {}
    for split, count, split_seed, part in (('train', num_train, seed, 0),
                                           ('val', num_val, seed + 1, 1)):
        rng = np.random.default_rng(split_seed)
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        entries, annotations = [], []
        for image_id in range(1, count + 1):
            canvas, objects = _make_image(rng, photos, images[part::2], labels[part::2],
                                          image_size, max_objects, side_range)
            file_name = f'{image_id:06d}.png'
            canvas.save(osp.join(out_dir, split, file_name))
            entries.append(dict(id=image_id, file_name=file_name, width=image_size,
                                height=image_size))
            for label, mask in objects:
                annotations.append(_annotation(mask, label, image_id, len(annotations) + 1))
        path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(path, 'w') as f:
            json.dump(dict(images=entries, annotations=annotations, categories=categories), f)
        paths[split] = path
    return paths


def photo_digit_crops(num: int, size: int = 32, side_range: Tuple[int, int] = (14, 28),
                      seed: int = 0, background_fraction: float = 1 / 11):
    """The fine-tune setting's pretraining task: classify ``size`` px crops of the same
    photographs as showing one of the ten digits (0-9) or none (class 10).

    Digits come from the even-index half of scikit-learn's digits only, so the detection set's
    validation handwriting (odd indices) is never seen in pretraining. Returns ``(images uint8
    N x size x size x 3, labels int64 N)``, deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    photos = photo_sources()
    from sklearn.datasets import load_digits
    digits = load_digits()
    images_all = digits.images[0::2].astype(np.float32) / 16.0
    labels_all = digits.target[0::2].astype(np.int64)
    out = np.empty((num, size, size, 3), dtype=np.uint8)
    labels = np.empty(num, dtype=np.int64)
    for i in range(num):
        img = _background(rng, photos, size)
        if rng.random() < background_fraction:
            labels[i] = 10
        else:
            index = int(rng.integers(len(images_all)))
            side = int(rng.integers(side_range[0], min(side_range[1], size) + 1))
            x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            alpha = np.asarray(Image.fromarray(images_all[index]).resize(
                (side, side), Image.BILINEAR), dtype=np.float32).clip(0, 1)
            region = img[y0:y0 + side, x0:x0 + side]
            ink = (rng.uniform(165, 255, size=3) if region.mean() < 128
                   else rng.uniform(0, 90, size=3))
            region[...] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
            labels[i] = labels_all[index]
        out[i] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return out, labels
