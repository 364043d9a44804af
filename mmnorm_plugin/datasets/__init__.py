"""Generated sets for the studies: COCO-format detection sets and an ImageNet-format
classification set (see each module)."""
from .imagenet_folder import make_photo_digit_crops_imagenet
from .photo_digits import make_photo_digits

__all__ = ['make_photo_digits', 'make_photo_digit_crops_imagenet']
