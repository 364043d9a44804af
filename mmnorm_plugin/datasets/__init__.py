"""Generated COCO-format sets for the studies (see each module)."""
from .photo_digits import make_photo_digits

__all__ = ['make_photo_digits']
