"""A tiny classification set in ImageNet's folder layout, for mmpretrain's ``ImageNet`` dataset.

ImageNet cannot be downloaded here, yet the ImageNet configs (``configs/pretrain``) and the path
from an mmpretrain backbone into a detector must run end to end. This writes the photo-digit crops
of the fine-tune setting's pretraining task
(:func:`~mmnorm_plugin.datasets.photo_digits.photo_digit_crops`: real photographs shipped offline,
a handwritten digit or none) in the layout mmpretrain reads for ImageNet::

    out_dir/train/<class>/<index>.png    out_dir/meta/train.txt   "<class>/<index>.png <label>"
    out_dir/val/<class>/<index>.png      out_dir/meta/val.txt

so an ImageNet config trains on it by changing ``data_root`` only (the annotation files give
the labels, as ImageNet's ``meta/*.txt`` do; the class folders also suit mmpretrain's
``CustomDataset``). Labels are 0-9 for the digits and 10 for background; a 1000-class head
trains on them unchanged.

Deterministic: the same arguments write byte-identical files.
"""
import os
import os.path as osp
from typing import Dict

from PIL import Image

__all__ = ['CROP_CLASSES', 'make_photo_digit_crops_imagenet']

#: class folder names, in label order
CROP_CLASSES = tuple(str(d) for d in range(10)) + ('background', )


def _write_split(out_dir: str, split: str, images, labels) -> int:
    lines = []
    for index, (image, label) in enumerate(zip(images, labels)):
        name = f'{CROP_CLASSES[label]}/{index:05d}.png'
        path = osp.join(out_dir, split, name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path)
        lines.append(f'{name} {int(label)}\n')
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    with open(osp.join(out_dir, 'meta', f'{split}.txt'), 'w') as f:
        f.writelines(lines)
    return len(lines)


def make_photo_digit_crops_imagenet(out_dir: str, num_train: int = 2000, num_val: int = 500,
                                    size: int = 32, seed: int = 0) -> Dict[str, int]:
    """Write ``num_train`` + ``num_val`` crops of ``size`` px under ``out_dir`` (see the module
    docstring); train and val are drawn with different seeds. Returns the image count per split.
    """
    from .photo_digits import photo_digit_crops
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train}, {num_val}')
    counts = {}
    for split, num, split_seed in (('train', num_train, seed), ('val', num_val, seed + 1)):
        images, labels = photo_digit_crops(num, size=size, seed=split_seed)
        counts[split] = _write_split(out_dir, split, images, labels)
    return counts
