"""Generated sets for the studies: COCO-format detection sets, an ImageNet-format
classification set and the neutral set's semantic maps (see each module)."""
from .imagenet_folder import make_photo_digit_crops_imagenet
from .photo_digits import make_photo_digits
from .photo_digits_seg import make_photo_digits_seg, write_semantic_maps

__all__ = ['make_photo_digits', 'make_photo_digit_crops_imagenet', 'make_photo_digits_seg',
           'write_semantic_maps']
