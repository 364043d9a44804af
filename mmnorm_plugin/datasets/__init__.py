"""Generated COCO-format sets for the studies, and the neutral set's semantic maps (see each
module)."""
from .photo_digits import make_photo_digits
from .photo_digits_seg import make_photo_digits_seg, write_semantic_maps

__all__ = ['make_photo_digits', 'make_photo_digits_seg', 'write_semantic_maps']
