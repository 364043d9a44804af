"""A deterministic, COCO-format toy detection/instance-segmentation dataset.

Images show a few filled shapes (squares, circles, triangles, rotated) on textured
backgrounds (smooth colour noise plus random stripes). Every object has a polygon
segmentation, an exact bbox and its mask area, so the files are real inputs for mmdet's
``CocoDataset`` and are scored by ``CocoMetric`` (pycocotools) for both ``bbox`` and ``segm``.
The same ``seed`` always produces byte-identical JSON and PNG files.

``variant='hard'`` makes a set on which BatchNorm at 1 image per batch measurably loses to
BatchNorm at 8 images per batch (the small-batch regime the plugin's norms are for):

* per-image photometric change, applied to the whole finished image as a camera's exposure and
  white balance would: a contrast gain ``g`` log-uniform in [0.3, 1.5], a global brightness
  offset in [-60, 60] and a colour cast (per-channel offset in [-30, 30]),
  ``out_c = 128 + offset + cast_c + g * (img_c - 128)``, clipped to [0, 255]. This makes the
  variance *between* images' channel means as large as the variance within an image. BN at
  batch 1 trains on each image's own statistics (it never sees the between-image part) but
  tests with running statistics that contain it, so training and testing disagree; BN at
  batch 8 trains on statistics that already mix 8 images. Batch-independent norms (GN, XBN's
  GroupNorm) remove a per-image gain/offset in their first layer in training and testing alike;
  BGN at batch 1 does so in training only (it evaluates with running averages, like BN).
* small images, 96x96 px: a stride-32 feature map is 3x3, so BN at batch 1 estimates each
  deep channel's statistics from 9 values (72 at batch 8);
* per-image object scale: every radius is multiplied by a zoom log-uniform in [0.8, 1.3];
* more, smaller objects: 1..5 per image, radius 7..14 px before the zoom (boxes of about
  8 to 36 px: the smallest still overlap a 16 px anchor with IoU >= 0.3, see
  configs/small_batch).

The measurement behind this design is in docs/study_small_batch.md ("Small-batch detection study").
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

__all__ = ['CLASSES', 'VARIANTS', 'make_tiny_coco']

CLASSES = ('square', 'circle', 'triangle')
# saturated colours, far from the textured mid-tone backgrounds
_PALETTE = ((255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
            (0, 0, 0), (255, 255, 255))


#: variant -> (image_size, max_objects, radius_range, zoom_range, photometric)
VARIANTS = {
    'default': (160, 3, (12., 32.), None, False),
    'hard': (96, 5, (7., 14.), (0.8, 1.3), True),
}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # smooth colour noise: a coarse random grid upsampled bilinearly
    coarse = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.float32)
    img = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size),
                                                                     Image.BILINEAR),
                     dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 16)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    img += 18 * stripes[..., None]
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255)


def _polygon(rng: np.random.Generator, label: int, cx: float, cy: float,
             radius: float) -> List[Tuple[float, float]]:
    rot = rng.uniform(0, 2 * math.pi)
    if CLASSES[label] == 'circle':
        angles = [2 * math.pi * k / 24 for k in range(24)]
    elif CLASSES[label] == 'square':
        angles = [rot + math.pi / 4 + k * math.pi / 2 for k in range(4)]
    else:
        angles = [rot + k * 2 * math.pi / 3 for k in range(3)]
    return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]


def _overlaps(box: Sequence[float], boxes: List[Sequence[float]], margin: float = 2) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin
               and b[1] < y1 + margin for b in boxes)


def _photometric(rng: np.random.Generator, canvas: Image.Image) -> Image.Image:
    gain = math.exp(rng.uniform(math.log(0.3), math.log(1.5)))
    offset = rng.uniform(-60, 60) + rng.uniform(-30, 30, size=3)
    img = 128 + offset + gain * (np.asarray(canvas, dtype=np.float32) - 128)
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8))


def _make_image(rng: np.random.Generator, size: int, max_objects: int,
                radius_range: Tuple[float, float], zoom_range: Optional[Tuple[float, float]] = None,
                photometric: bool = False):
    if zoom_range is not None:
        zoom = math.exp(rng.uniform(math.log(zoom_range[0]), math.log(zoom_range[1])))
        # never larger than the image allows: the caller checked radius_range * zoom_range
        radius_range = (radius_range[0] * zoom, radius_range[1] * zoom)
    img = _background(rng, size)
    canvas = Image.fromarray(img.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    objects, boxes = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            label = int(rng.integers(len(CLASSES)))
            radius = rng.uniform(*radius_range)
            cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
            poly = _polygon(rng, label, cx, cy, radius)
            xs, ys = zip(*poly)
            box = (min(xs), min(ys), max(xs), max(ys))
            if not _overlaps(box, boxes):
                break
        else:
            continue
        # colour carries no class information: the shape alone decides the label
        draw.polygon(poly, fill=_PALETTE[int(rng.integers(len(_PALETTE)))])
        boxes.append(box)
        objects.append((label, poly))
    if photometric:
        canvas = _photometric(rng, canvas)
    return canvas, objects


def _annotation(poly, label: int, image_id: int, ann_id: int, size: int) -> Dict:
    flat = [round(v, 2) for point in poly for v in point]
    rle = mask_utils.frPyObjects([flat], size, size)
    area = float(mask_utils.area(mask_utils.merge(rle)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(mask_utils.merge(rle)))
    return dict(id=ann_id, image_id=image_id, category_id=label + 1, segmentation=[flat],
                area=area, bbox=[x, y, w, h], iscrowd=0)


def make_tiny_coco(out_dir: str, num_train: int = 240, num_val: int = 60,
                   image_size: Optional[int] = None, max_objects: Optional[int] = None,
                   radius_range: Optional[Tuple[float, float]] = None, seed: int = 0,
                   variant: str = 'default') -> Dict[str, str]:
    """Write ``{train,val}/*.png`` and ``annotations/instances_{train,val}.json`` under ``out_dir``.

    Returns the paths of the two annotation files. Train and val use disjoint random streams
    of the same distribution. ``variant`` is a key of :data:`VARIANTS` ('default': 160 px
    images, 1..3 objects of radius 12..32 px; 'hard': see the module docstring);
    ``image_size``, ``max_objects`` and ``radius_range`` override the variant's values when given.
    """
    if variant not in VARIANTS:
        raise ValueError(f'variant must be one of {sorted(VARIANTS)}, got {variant!r}')
    preset_size, preset_objects, preset_radii, zoom_range, photometric = VARIANTS[variant]
    image_size = preset_size if image_size is None else image_size
    max_objects = preset_objects if max_objects is None else max_objects
    radius_range = preset_radii if radius_range is None else radius_range
    largest = radius_range[1] * (zoom_range[1] if zoom_range else 1)
    if num_train < 1 or num_val < 1:
        raise ValueError(f'need at least one image per split, got {num_train}/{num_val}')
    if not (0 < radius_range[0] <= radius_range[1] and largest < image_size / 2):
        raise ValueError(f'radius_range {radius_range} (zoom up to {largest:.1f}) does not fit '
                         f'{image_size}px images')
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    paths = {}
    for split, count, split_seed in (('train', num_train, seed), ('val', num_val, seed + 1)):
        rng = np.random.default_rng(split_seed)
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            canvas, objects = _make_image(rng, image_size, max_objects, radius_range, zoom_range,
                                          photometric)
            file_name = f'{image_id:06d}.png'
            canvas.save(osp.join(out_dir, split, file_name))
            images.append(dict(id=image_id, file_name=file_name, width=image_size,
                               height=image_size))
            for label, poly in objects:
                annotations.append(_annotation(poly, label, image_id, len(annotations) + 1,
                                               image_size))
        path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(path, 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        paths[split] = path
    return paths
