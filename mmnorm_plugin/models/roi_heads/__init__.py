"""RoI heads, registered in mmdet.registry.MODELS."""
from .convfc_bbox_head import Shared4Conv1FCLastReLUBBoxHead

__all__ = ['Shared4Conv1FCLastReLUBBoxHead']
