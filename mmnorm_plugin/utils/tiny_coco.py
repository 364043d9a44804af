"""Moved to :mod:`mmnorm_plugin.datasets.tiny_coco`; this path keeps old imports working (deprecated)."""
import warnings

from ..datasets.tiny_coco import *  # noqa: F401,F403
from ..datasets.tiny_coco import __all__  # noqa: F401

warnings.warn('mmnorm_plugin.utils.tiny_coco moved to mmnorm_plugin.datasets.tiny_coco', DeprecationWarning,
              stacklevel=2)
