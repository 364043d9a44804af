from . import backbones, layers, roi_heads  # noqa: F401
